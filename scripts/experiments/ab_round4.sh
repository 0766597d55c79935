#!/bin/bash
# Round 4 A/B: both arms warm-start from the published default (runs/ab_round3/f, step 3,200, code noise 0.5) and
# train 500 more steps with the same noise; only the corpus differs. h: old corpus (control); e: the natural
# corpus (Kokoro + flite/espeak, gated; codec v1 tokens) joined to the old corpus. Both validate on the same
# shard (data/tts_tokens_v2/tokens-000021.tar, the last shard of both data lists).
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
DATA=data/tts_tokens_v2
[ "$arm" = e ] && DATA="data/tts_tokens_codec_rvq16k_e5fb0ed34b921f99::data/tts_tokens_v2"
MASTER_PORT=$port OMP_NUM_THREADS=1 exec .venv/bin/python scripts/train.py --config configs/train_mini_cpu_phone.yaml \
  --data "$DATA" --out runs/ab_round4/$arm/train --deepspeed ds_configs/zero2.json --resume \
  init_from=runs/ab_round3/f/train/export max_steps=3700 schedule.total_steps=6000 data.code_noise=0.5 eval_every=250 "$@"
