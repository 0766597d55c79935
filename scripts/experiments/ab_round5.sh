#!/bin/bash
# Round 5 A/B: both arms warm-start from round 4's winner ($INIT, step 3,700) with its corpus ($DATA) and train
# $STEPS more steps; only the AR's input corruption differs. i: code noise 0.5 (control); j: self-feed 0.5
# (its own teacher-forced draws at temperature 1, data.self_feed) instead of uniform code noise.
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
EXTRA="data.code_noise=0.5"
[ "$arm" = j ] && EXTRA="data.code_noise=0.0 data.self_feed=0.5 data.self_feed_temperature=1.0"
MASTER_PORT=$port OMP_NUM_THREADS=1 exec .venv/bin/python scripts/train.py --config configs/train_mini_cpu_phone.yaml \
  --data "$DATA" --out runs/ab_round5/$arm/train --deepspeed ds_configs/zero2.json --resume \
  init_from=$INIT max_steps=$((3700 + STEPS)) schedule.total_steps=6000 eval_every=200 $EXTRA "$@"
