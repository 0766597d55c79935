#!/bin/bash
# Phonetic-codebook A/B (issue 17 part 3): two LMs from scratch, same config, steps, seed and code noise; only
# the codec of their tokens differs:
#   c: data/tts_tokens_v2, tokenized by models/codec_rvq16k (the published default's codec)
#   p: data/tts_tokens_phon, tokenized by runs/codec_phon/export: codec_rvq16k fine-tuned with a phone loss on
#      its first codebook (scripts/train_codec.py --phone-data ...)
# Judged by scripts/diagnose_stages.py on the 44 real clips (each tokenized by its arm's codec) and by
# scripts/diagnose_codebook_phones.py.
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
DATA=data/tts_tokens_v2
[ "$arm" = p ] && DATA=data/tts_tokens_phon
MASTER_PORT=$port OMP_NUM_THREADS=1 exec .venv/bin/python scripts/train.py --config configs/train_mini_cpu_phone.yaml \
  --data "$DATA" --out runs/ab_phon/$arm/train --deepspeed ds_configs/zero2.json --resume \
  max_steps=600 schedule.total_steps=6000 data.code_noise=0.5 eval_every=300 "$@"
