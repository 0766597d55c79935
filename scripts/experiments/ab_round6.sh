#!/bin/bash
# Round 6 A/B: every arm warm-starts from the published default (models/default, step 3,700, code noise 0.5)
# and trains 500 more steps with the same noise, validating on data/tts_tokens_v2/tokens-000021.tar (the last
# shard of every data list). Only one thing differs from the control c (the old corpus):
#   s: the old corpus + one speed-perturbed copy of each of its clips (scripts/perturb_corpus.py: 60 more
#      voices; their copies of the validation clips are in its training data, so its val loss reads low)
#   (a third arm, p: data.prompt_noise=0.5, random codes in half of the AR's prompt, was stopped at step 3,740
#   for CPU time and its option removed: the stage diagnosis had meanwhile shown the teacher-forced AR failing
#   on real voices, which no prompt corruption reaches)
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
DATA=data/tts_tokens_v2
[ "$arm" = s ] && DATA="data/tts_tokens_sp::data/tts_tokens_v2"
MASTER_PORT=$port OMP_NUM_THREADS=1 exec .venv/bin/python scripts/train.py --config configs/train_mini_cpu_phone.yaml \
  --data "$DATA" --out runs/ab_round6/$arm/train --deepspeed ds_configs/zero2.json --resume \
  init_from=models/default max_steps=4200 schedule.total_steps=6000 data.code_noise=0.5 eval_every=250 "$@"
