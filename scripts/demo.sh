#!/usr/bin/env bash
# The main job on the embedded default: real speech -> shards -> codes -> batches. Grows with the project.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/demo}
rm -rf "$RUN"
$PY scripts/ingest.py --input tests/data/speech/ljspeech-sample --output "$RUN/raw"
$PY scripts/tokenize_shards.py --input "$RUN/raw" --output "$RUN/tokens" --codec encodec_24khz:random
echo "demo: shards in $RUN/raw, codes in $RUN/tokens"
