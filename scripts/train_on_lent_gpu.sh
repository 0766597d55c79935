#!/usr/bin/env bash
# Train one or more runs side by side on a lent GPU machine for a fixed wall-clock budget, export them, and
# put the exports where they come back ($OUT). Such a machine is bare, has no network and is held for minutes,
# so the script: installs the carried wheels (scripts/device_wheels.sh), unpacks the carried token folders,
# runs a short smoke of every run together (fails fast, and measures the step time they get when they share
# the GPU), sizes max_steps so that each cosine schedule ends inside the budget, trains, SIGTERMs whatever
# is still running at the deadline (a checkpoint is written, scripts/export_checkpoint.py exports it), and
# splits every model.safetensors, in float16 as models/default ships, into parts of at most 15 MB (the
# transfer's per-file limit). Rejoin here with `python scripts/weight_parts.py join`. Logs: $OUT/logs.tar
#
#   RUNS="a|data/tokens_a|20|--config configs/train_mini_cpu_phone.yaml data.code_noise=0.25" \
#   BUDGET_S=420 bash scripts/train_on_lent_gpu.sh
# STEP_S=0.4 skips the smoke and sizes max_steps from that step time.
# RUNS: newline-separated "name|token folder|smoke steps|train.py arguments"; with init_from=DIR the run
# continues DIR's step count, so max_steps is counted on top of it.
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
OUT=${OUT:-runs/lent_gpu_out}
WORK=${WORK:-/tmp/lent_gpu}
BUDGET_S=${BUDGET_S:-420}      # seconds from the start of the real runs to their deadline
START=$SECONDS
mkdir -p "$OUT" "$WORK/logs"
trap 'tar cf "$OUT/logs.tar" -C "$WORK" logs' EXIT
log() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - START))s] $*"; }

if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        || { log "wheel install failed"; exit 3; }
    export PYTHONPATH=/tmp/site:$PWD
fi
UNPACK_TO=${UNPACK_TO:-data}   # carried token folders: .gpu/*.tar.xz (made with tar cJf from data/)
mkdir -p "$UNPACK_TO"
for archive in .gpu/*.tar.xz; do
    [ -e "$archive" ] || continue
    log "unpacking $archive"; tar xJf "$archive" -C "$UNPACK_TO" || { log "cannot unpack $archive"; exit 3; }
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, deepspeed; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'deepspeed', deepspeed.__version__)" || exit 3

# last logged seconds_per_step of a metrics file
seconds_per_step() {
    $PY -c "import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows=[r for r in rows if r.get('split')=='train' and 'seconds_per_step' in r]
print(rows[-1]['seconds_per_step'], rows[-1]['step'])" "$1"
}
# the step a run starts from: init_from's train_step, else 0
start_step() {
    local init; init=$(echo "$1" | grep -o 'init_from=[^ ]*' | cut -d= -f2)
    [ -n "$init" ] || { echo 0; return; }
    $PY -c "import json,sys; print(json.load(open(sys.argv[1]+'/config.json'))['metadata']['train_step'])" "$init"
}

mapfile -t SPECS < <(echo "${RUNS:?set RUNS}" | sed '/^\s*$/d')
# 1. smoke: every run for a few steps, all together
declare -A PIDS SPS FIRST
for spec in "${SPECS[@]}"; do
    IFS='|' read -r name data smoke args <<< "$spec"
    FIRST[$name]=$(start_step "$args")
    if [ -n "${STEP_S:-}" ]; then SPS[$name]=$STEP_S; continue; fi  # known step time: no smoke
    # shellcheck disable=SC2086
    $PY scripts/train.py --data "$data" --out "$WORK/smoke_$name" --deepspeed ds_configs/zero2.json $args \
        max_steps=$((FIRST[$name] + smoke)) eval_every=1000000 checkpoint_every=1000000 export=false \
        log.every=$(( smoke / 2 )) > "$WORK/logs/smoke_$name.log" 2>&1 &
    PIDS[$name]=$!
done
for name in "${!PIDS[@]}"; do
    wait "${PIDS[$name]}" || { log "smoke of $name failed:"; tail -30 "$WORK/logs/smoke_$name.log"; exit 4; }
    read -r sps step < <(seconds_per_step "$WORK/smoke_$name/metrics.jsonl")
    SPS[$name]=$sps
    log "smoke $name: ${sps} s/step together (at step $step)"
done

# 2. the real runs: max_steps sized to end before the deadline (minus start-up, evals and the final save)
DEADLINE=$((SECONDS + BUDGET_S))
declare -A RUN_PIDS
for spec in "${SPECS[@]}"; do
    IFS='|' read -r name data smoke args <<< "$spec"
    steps=$($PY -c "print(max(${MIN_STEPS:-50}, int(($BUDGET_S - 60) / ${SPS[$name]} * 0.85)))")
    total=$((FIRST[$name] + steps))
    every=$(( (steps / 4 + 49) / 50 * 50 ))
    log "run $name: steps $((FIRST[$name])) -> $total, eval every $every"
    # shellcheck disable=SC2086
    $PY scripts/train.py --data "$data" --out "$WORK/$name" --deepspeed ds_configs/zero2.json $args \
        max_steps=$total schedule.total_steps=$total eval_every=$every checkpoint_every=$every \
        keep_checkpoints=1 > "$WORK/logs/train_$name.log" 2>&1 &
    RUN_PIDS[$name]=$!
done
while [ $SECONDS -lt $DEADLINE ]; do
    alive=0
    for name in "${!RUN_PIDS[@]}"; do kill -0 "${RUN_PIDS[$name]}" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 5
done
for name in "${!RUN_PIDS[@]}"; do
    if kill -0 "${RUN_PIDS[$name]}" 2>/dev/null; then
        log "deadline: SIGTERM $name"; kill -TERM "${RUN_PIDS[$name]}"
    fi
done
# 3. export and pack what comes back
for name in "${!RUN_PIDS[@]}"; do
    wait "${RUN_PIDS[$name]}"; rc=$?
    log "run $name exited $rc"
    if [ ! -f "$WORK/$name/export/model.safetensors" ]; then
        $PY scripts/export_checkpoint.py --run "$WORK/$name" --out "$WORK/$name/export" >> "$WORK/logs/train_$name.log" 2>&1 \
            || { log "export of $name failed"; continue; }
    fi
    $PY scripts/weight_parts.py split --float16 "$WORK/$name/export/model.safetensors" "$OUT/${name}_weights" \
        || log "split of $name failed"
    tar cf "$OUT/${name}_meta.tar" -C "$WORK/$name" export/config.json export/tokenizer.model \
        train_config.yaml metrics.jsonl
    grep '"split": "val"' "$WORK/$name/metrics.jsonl" | cut -c1-400
done
log "done"
