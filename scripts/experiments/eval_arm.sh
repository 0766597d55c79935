#!/bin/bash
# runs/eval_arm.sh ROUND_DIR ARM SEED... : evaluate ROUND_DIR/ARM/train/export on the unseen sentences at t 0.3
cd "$(dirname "$0")/../.."
dir=$1; arm=$2; shift 2
for seed in "$@"; do
  OMP_NUM_THREADS=1 .venv/bin/python scripts/evaluate.py --checkpoint $dir/$arm/train/export --list evaluation/lists/unseen_sentences.lst \
    --no-ground-truth --temperature 0.3 --seed $seed --out $dir/eval_${arm}_$seed > $dir/eval_${arm}_$seed.log 2>&1
done
