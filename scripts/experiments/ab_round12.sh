#!/bin/bash
# Round 12: from the step-7,000 export (models/default's weights, fp32: EXPORT), 1,000 steps of the round-11
# restart recipe (cosine to 9,500, stopped at 8,000), one thing changed:
#   r:  control, data/tts_tokens_v3c (the first 5,400 sentences, one voice each; Round 11 ran it as runs/s35/r)
#   x:  every sentence of ../shared/text (12,548 after the evaluation texts are left out) read by the same 12
#       voices (data/tts_tokens_x, built here first). Why: the steps past 7,000 read worse twice; with 5,400
#       clips, 7,000 steps of batch ~12 are ~15 passes, so the later steps may fit the sentences themselves.
# Then: cp EXPORT/house_voices.safetensors into the new export and evaluate it as README Round 12 says.
#   scripts/experiments/ab_round12.sh x EXPORT PORT
set -euo pipefail
cd "$(dirname "$0")/../.."
arm=$1; export_dir=$2; port=$3; shift 3
PY=.venv/bin/python
case $arm in
  r) DATA=data/tts_tokens_v3c ;;
  x) DATA=data/tts_tokens_x
     if [ ! -f "$DATA/codec.json" ]; then
       OMP_NUM_THREADS=1 $PY scripts/build_tts_corpus.py --out data/tts_corpus_x --workers 2
       OMP_NUM_THREADS=1 $PY scripts/ingest.py --input data/tts_corpus_x --output data/tts_raw_x --shard-max-count 250
       OMP_NUM_THREADS=2 $PY scripts/tokenize_shards.py --input data/tts_raw_x --output "$DATA" \
         --codec models/codec_rvq16k_v3 --align auto
     fi ;;
  *) echo "arm must be r or x" >&2; exit 2 ;;
esac
MASTER_PORT=$port OMP_NUM_THREADS=${THREADS:-2} $PY scripts/train.py \
  --config configs/train_mini_cpu_phone.yaml --data "$DATA" --out runs/ab_round12/$arm/train \
  --deepspeed ds_configs/zero2.json --resume init_from="$export_dir" max_steps=8000 \
  schedule.total_steps=9500 data.code_noise=0.5 data.continuation_prob=0.25 eval_every=250 keep_checkpoints=3 "$@"
cp "$export_dir/house_voices.safetensors" runs/ab_round12/$arm/train/export/
