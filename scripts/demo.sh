#!/usr/bin/env bash
# The main job, end to end on the CPU: real speech -> raw shards -> codes -> a short tiny-preset DeepSpeed
# training run -> export -> generate.py voice-cloning from a real prompt clip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/demo}
CODEC=${CODEC:-encodec_24khz:random}
STEPS=${STEPS:-30}
rm -rf "$RUN"
$PY scripts/ingest.py --input tests/data/speech --format folder --output "$RUN/raw"
$PY scripts/tokenize_shards.py --input "$RUN/raw" --output "$RUN/tokens" --codec "$CODEC"
$PY scripts/train.py --config configs/train_tiny_cpu.yaml --data "$RUN/tokens" --out "$RUN/train" \
    --deepspeed ds_configs/zero2.json --max-steps "$STEPS"
$PY scripts/generate.py --checkpoint "$RUN/train/export" \
    --prompt-audio tests/data/speech/ljspeech-sample/LJ001-0002.wav \
    --text "The printing press changed the world." --seed 0 --out "$RUN/demo.wav"
echo "demo: wrote $RUN/demo.wav"
