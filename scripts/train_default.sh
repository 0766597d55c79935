#!/usr/bin/env bash
# Recipe for the embedded default model (models/default): synthetic corpus -> ingest -> tokenize with our
# codec -> mini preset on 4 codebooks -> export. Every stage skips or resumes finished work, so rerunning the
# script after a kill continues where it stopped. CPU by default; on a GPU machine the same commands run there.
#   apt-get install -y espeak-ng flite
#   bash scripts/train_default.sh [MAX_SENTENCES] [train.py overrides, e.g. max_steps=8000]
#   CONFIG=configs/train_mini_cpu_ar2.yaml RUN=runs/lm_ar2 bash scripts/train_default.sh   # another variant
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/lm_default}
CODEC=${CODEC:-models/codec_rvq16k}
CONFIG=${CONFIG:-configs/train_mini_cpu_phone.yaml}  # the phone-aligned mini model (README: A/B)
TOKENS=${TOKENS:-data/tts_tokens_v2}  # token shards with phone alignments
SENTENCES=${1:-5400}; shift $(( $# > 0 ? 1 : 0 ))
mkdir -p "$RUN"

$PY scripts/build_tts_corpus.py --out data/tts_corpus --max-sentences "$SENTENCES"
# v2: clips carry their exact phone timings ({key}.align.json); shards from before that are rebuilt
[ -f data/tts_raw/.done-v2 ] || { $PY scripts/ingest.py --input data/tts_corpus/synth --output data/tts_raw \
    --shard-max-count 250 \
    --overwrite && touch data/tts_raw/.done-v2; }
$PY scripts/tokenize_shards.py --input data/tts_raw --output "$TOKENS" --codec "$CODEC" --align auto
# Run directories do not outlive a machine: a run with no checkpoint starts from the committed default's
# weights and step count (lm/warm_start.py) when it is the same recipe; FRESH=1 starts from scratch.
INIT=()
if [ ! -f "$RUN/train/checkpoints/latest" ] && [ -f models/default/config.json ] && [ -z "${FRESH:-}" ] \
        && [ "$CONFIG" = configs/train_mini_cpu_phone.yaml ]; then
    INIT=(init_from=models/default)
    echo "no checkpoint in $RUN/train: starting from models/default ($(grep -o '"train_step": [0-9]*' \
        models/default/config.json))"
fi
$PY scripts/train.py --config "$CONFIG" --data "$TOKENS" --out "$RUN/train" \
    --deepspeed ds_configs/zero2.json --resume "${INIT[@]}" "$@"
echo "export: $RUN/train/export (publish it: python scripts/publish_default.py --export $RUN/train/export)"
