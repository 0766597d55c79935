#!/bin/bash
# Round 9: from round 8's step 4,700 (runs/ab_round8/r_export_4700, r continued 500 steps past the published
# 4,200), 500 more steps of the round-8 recipe (v3 tokens, code noise 0.5), one thing changed:
#   a:  control, continuation_prob 0.25 (the recipe's: 3 of 4 rows in speaker-prompt layout)
#   cp: continuation_prob 0.75. Why: generate.py now transcribes a prompt given without its transcript, so
#       users get continuation mode, which reads better at inference (capped WER 57.6 vs 70.6 %, seeds 1234+i)
#       but is what the model trains on least.
# Both start from the export's weights and step (fresh AdamW moments alike) and keep every 100-step
# checkpoint, so their late checkpoints can be averaged (scripts/average_exports.py).
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
case $arm in
  a) CP=0.25 ;;
  cp) CP=0.75 ;;
  *) echo "arm must be a or cp" >&2; exit 2 ;;
esac
MASTER_PORT=$port OMP_NUM_THREADS=${THREADS:-1} exec .venv/bin/python scripts/train.py \
  --config configs/train_mini_cpu_phone.yaml --data data/tts_tokens_v3c --out runs/ab_round9/$arm/train \
  --deepspeed ds_configs/zero2.json --resume init_from=runs/ab_round8/r_export_4700 max_steps=5200 \
  schedule.total_steps=6000 data.code_noise=0.5 data.continuation_prob=$CP eval_every=250 keep_checkpoints=6 "$@"
