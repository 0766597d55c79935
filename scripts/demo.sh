#!/usr/bin/env bash
# The main job on the CPU.
#   With the embedded default model (models/default): clone the voice of a real prompt clip, no training.
#   Without it, or with DEMO=pipeline: the whole pipeline end to end on real speech -> raw shards -> codes ->
#   a short tiny-preset DeepSpeed training run -> export -> generate.py (noise-like speech: 30 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/demo}
PROMPT=${PROMPT:-tests/data/speech/ljspeech-sample/LJ001-0002.wav}
TEXT=${TEXT:-"The printing press changed the world, and it changed it quickly."}
DEMO=${DEMO:-$([ -f models/default/config.json ] && echo default || echo pipeline)}
mkdir -p "$RUN"

if [ "$DEMO" = default ]; then
    $PY scripts/generate.py --prompt-audio "$PROMPT" --text "$TEXT" --seed 0 --threads 1 --out "$RUN/demo.wav"
    echo "demo: wrote $RUN/demo.wav (models/default, prompt $PROMPT)"
    exit 0
fi

CODEC=${CODEC:-encodec_24khz:random}
STEPS=${STEPS:-30}
rm -rf "$RUN"/raw "$RUN"/tokens "$RUN"/train
$PY scripts/ingest.py --input tests/data/speech --format folder --output "$RUN/raw"
$PY scripts/tokenize_shards.py --input "$RUN/raw" --output "$RUN/tokens" --codec "$CODEC"
$PY scripts/train.py --config configs/train_tiny_cpu.yaml --data "$RUN/tokens" --out "$RUN/train" \
    --deepspeed ds_configs/zero2.json --max-steps "$STEPS"
$PY scripts/generate.py --checkpoint "$RUN/train/export" --prompt-audio "$PROMPT" \
    --text "$TEXT" --seed 0 --out "$RUN/demo.wav"
echo "demo: wrote $RUN/demo.wav (pipeline demo: $STEPS training steps, codec $CODEC)"
