#!/bin/bash
# Round 7 A/B: as round 6 (ab_round6.sh: warm start from models/default, step 3,700, code noise 0.5, 500 more
# steps, validation on data/tts_tokens_v2/tokens-000021.tar); the control is round 6's arm c. One thing differs:
#   k:  the old corpus + Kokoro voices with their exact timings (the 46 candidate voices' 30 gate sentences
#       each: 1,380 clips, 1.6 h; data_pipeline/corpus/kokoro_timing.py)
#   ch: the old corpus + one channel-augmented copy of each clip (EQ / reverb / noise / level, one fixed channel
#       per pseudo-speaker {speaker}_ch{0..4}: 60 speaker-channels, 8.8 h)
cd "$(dirname "$0")/../.."
arm=$1; port=$2; shift 2
case $arm in
  k) DATA="runs/kgate/tok::data/tts_tokens_v2" ;;
  ch) DATA="data/tts_tokens_ch::data/tts_tokens_v2" ;;
  *) echo "arm must be k or ch" >&2; exit 2 ;;
esac
MASTER_PORT=$port OMP_NUM_THREADS=1 exec .venv/bin/python scripts/train.py --config configs/train_mini_cpu_phone.yaml \
  --data "$DATA" --out runs/ab_round7/$arm/train --deepspeed ds_configs/zero2.json --resume \
  init_from=models/default max_steps=4200 schedule.total_steps=6000 data.code_noise=0.5 eval_every=250 "$@"
