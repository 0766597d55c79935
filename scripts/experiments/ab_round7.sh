#!/bin/bash
# Round 7 A/B: as round 6 (ab_round6.sh: warm start from models/default, step 3,700, code noise 0.5, 500 more
# steps, validation on data/tts_tokens_v2/tokens-000021.tar); the control c is round 6's. One thing differs:
#   k:  the old corpus + Kokoro voices with their exact timings (the 46 candidate voices' 30 gate sentences
#       each: 1,380 clips, 1.6 h; data_pipeline/corpus/kokoro_timing.py). Made by
#       build_tts_corpus.py --config configs/tts_corpus.yaml --out data/tts_corpus_k, stopped once the gate
#       clips are written (before scoring moves rejected voices out), then ingest.py --input
#       data/tts_corpus_k/kokoro --output data/tts_raw_kgate; tokenize_shards.py ... --output
#       data/tts_tokens_kgate --codec models/codec_rvq16k --align auto
#   ch: the old corpus + one channel-augmented copy of each clip (EQ / reverb / noise / level, one fixed
#       channel per pseudo-speaker {speaker}_ch{0..4}: 60 speaker-channels, 8.8 h): perturb_corpus.py --kind
#       channel --input data/tts_corpus/synth --out data/tts_corpus_ch/synth_ch, ingested and tokenized into
#       data/tts_tokens_ch. The runs of 2026-12-05 used OMP_NUM_THREADS=2 (one run at a time)
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
case $arm in
  k) DATA="data/tts_tokens_kgate::data/tts_tokens_v2" ;;
  ch) DATA="data/tts_tokens_ch::data/tts_tokens_v2" ;;
  c) DATA="data/tts_tokens_v2" ;;  # round 6's control, rerun on the corpus rebuilt for this round
  *) echo "arm must be k, ch or c" >&2; exit 2 ;;
esac
MASTER_PORT=$port OMP_NUM_THREADS=1 exec .venv/bin/python scripts/train.py --config configs/train_mini_cpu_phone.yaml \
  --data "$DATA" --out runs/ab_round7/$arm/train --deepspeed ds_configs/zero2.json --resume \
  init_from=models/default max_steps=4200 schedule.total_steps=6000 data.code_noise=0.5 eval_every=250 "$@"
