#!/usr/bin/env bash
# Wheels for a lent GPU machine (Python 3.12, torch already installed there, no network): everything the
# training / tokenize / generate path needs beyond that image, pinned by constraints.txt, into .whl/ (ignored).
# On the device:  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#                 && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PKGS="deepspeed hjson pydantic pydantic_core annotated-types typing-inspection webdataset braceexpand
      vector-quantize-pytorch einx frozendict encodec soundfile cffi pycparser"
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for name in $PKGS; do
  pin=$(grep -i "^${name}==" constraints.txt | head -1)
  [ -n "$pin" ] || { echo "no pin for $name in constraints.txt" >&2; exit 1; }
  if ! $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl "$pin" 2>/dev/null; then
    $PY -m pip wheel -q --no-deps -w .whl "$pin"   # sdist-only (deepspeed): a pure-Python wheel built here
  fi
done
du -sh .whl && ls .whl
