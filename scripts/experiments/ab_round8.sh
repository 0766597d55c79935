#!/bin/bash
# Round 8: the published default moved onto codec_rvq16k_v3 (STOI 0.884 vs 0.788 on the 44 real clips) by
# scripts/remap_lm_codec.py (its code tables rebuilt from the old/new codes of the same 5,400 clips), then the
# round-7 recipe: 500 steps at code noise 0.5 from step 3,700, validation on the last shard. Its control is
# round 7's c (ab_round7.sh c: the same recipe on the v1 tokens).
#   r: data/tts_tokens_v3c (tokenize_shards.py --input data/tts_raw_v2 --codec models/codec_rvq16k_v3)
#   k: from r's step 4,200 (the published default): + the Kokoro gate clips (ab_round7.sh k) tokenized by v3
#      into data/tts_tokens_kgate_v3, 500 steps to 4,700; its control is r continued to 4,700 on v3c alone
#      (ab_round8.sh r ... max_steps=4700)
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
case $arm in
  r) DATA="data/tts_tokens_v3c"; INIT=runs/remap_v3/export ;;
  k) DATA="data/tts_tokens_kgate_v3::data/tts_tokens_v3c"; INIT=models/default ;;
  *) echo "arm must be r or k" >&2; exit 2 ;;
esac
MASTER_PORT=$port OMP_NUM_THREADS=${THREADS:-2} exec .venv/bin/python scripts/train.py \
  --config configs/train_mini_cpu_phone.yaml --data "$DATA" --out runs/ab_round8/$arm/train \
  --deepspeed ds_configs/zero2.json --resume init_from=$INIT max_steps=$([ $arm = k ] && echo 4700 || echo 4200) schedule.total_steps=6000 \
  data.code_noise=0.5 eval_every=250 "$@"
