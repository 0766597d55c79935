#!/usr/bin/env bash
# Recipe for the embedded default model (models/default): TTS corpus (configs/tts_corpus.yaml: flite and
# espeak-ng voices + gated Kokoro neural voices) -> ingest -> tokenize with our codec -> mini preset on 4
# codebooks -> export. Every stage skips or resumes finished work, so rerunning the script after a kill
# continues where it stopped. CPU by default; on a GPU machine the same commands run there.
#   apt-get install -y espeak-ng flite        (make env installs them and the Kokoro wheels)
#   bash scripts/train_default.sh [train.py overrides, e.g. max_steps=8000]
#   CONFIG=configs/train_mini_cpu_ar2.yaml RUN=runs/lm_ar2 bash scripts/train_default.sh   # another variant
#   CODEC=models/codec_rvq16k bash scripts/train_default.sh   # another codec: data/tts_tokens_<codec>_<corpus>
# Tokens of two codecs never mix: a token folder remembers its codec (codec.json) and refuses another, training
# refuses shards of two codecs, and a warm start needs the codec its model was trained on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/lm_default}
CODEC=${CODEC:-models/codec_rvq16k_v3}  # the codec of models/default
CONFIG=${CONFIG:-configs/train_mini_cpu_phone.yaml}  # the phone-aligned mini model (README: A/B)
CORPUS=${CORPUS:-data/tts_corpus}
RECIPE=${RECIPE:-configs/tts_corpus.yaml}
RAW=${RAW:-data/tts_raw_v3}
mkdir -p "$RUN"

$PY scripts/build_tts_corpus.py --config "$RECIPE" --out "$CORPUS"
# re-ingest when the corpus changed (its transcript lists are its contents)
STAMP=$(cat "$CORPUS"/*/transcripts.tsv | sha256sum | cut -c1-16)
if [ "$(cat "$RAW/.done" 2>/dev/null)" != "$STAMP" ]; then
    $PY scripts/ingest.py --input "$CORPUS" --output "$RAW" --shard-max-count 250 --overwrite
    echo "$STAMP" > "$RAW/.done"
fi
# one token folder per (corpus contents, codec): shards are skipped by name on a rerun, so a folder must never
# outlive the corpus it was made from
TOKENS=${TOKENS:-data/tts_tokens_$(basename "$CODEC")_$STAMP}
$PY scripts/tokenize_shards.py --input "$RAW" --output "$TOKENS" --codec "$CODEC" --align auto
# Run directories do not outlive a machine: a run with no checkpoint starts from the committed default's
# weights and step count (lm/training/warm_start.py) when it is the same recipe; FRESH=1 starts from scratch.
INIT=()
if [ ! -f "$RUN/train/checkpoints/latest" ] && [ -f models/default/config.json ] && [ -z "${FRESH:-}" ] \
        && [ "$CONFIG" = configs/train_mini_cpu_phone.yaml ]; then
    if $PY -c "import sys; from codec.identity import codec_identity; from lm.training.warm_start import check_init_codec
from data_pipeline.tokens.token_codec import CodecMismatchError
try: check_init_codec('models/default', codec_identity(sys.argv[1]), sys.argv[1])
except CodecMismatchError as e: sys.exit(f'{e}')" "$CODEC"; then
        INIT=(init_from=models/default)
        echo "no checkpoint in $RUN/train: starting from models/default ($(grep -o '"train_step": [0-9]*' \
            models/default/config.json))"
    else
        # another codec: keep the default's layers and rebuild its code tables from the same clips tokenized by
        # both codecs (scripts/remap_lm_codec.py, README "Round 8"); NO_REMAP=1 trains from scratch instead
        OLD_CODEC=$($PY -c "import json; m = json.load(open('models/default/config.json'))['metadata']
print('models/default/' + m['codec'])")
        if [ -n "${NO_REMAP:-}" ]; then
            echo "models/default was trained on another codec's tokens ($OLD_CODEC): training $RUN from scratch"
        else
            echo "models/default was trained on $OLD_CODEC's tokens: moving it onto $CODEC (remap_lm_codec.py)"
            OLD_TOKENS=data/tts_tokens_$(basename "$OLD_CODEC")_$STAMP
            $PY scripts/tokenize_shards.py --input "$RAW" --output "$OLD_TOKENS" --codec "$OLD_CODEC" --align auto
            $PY scripts/remap_lm_codec.py --checkpoint models/default --old-tokens "$OLD_TOKENS" \
                --new-tokens "$TOKENS" --out "$RUN/remapped"
            INIT=(init_from="$RUN/remapped")
        fi
    fi
fi
# code_noise 0.5: half of the AR's own input codes replaced by random ones, so it leans on its phones
# (README: A/Bs, 0 -> 0.25 at step 1,800, 0.25 -> 0.5 at 2,400); models/default: 0.25 from step 1,500, 0.5 from 2,100
$PY scripts/train.py --config "$CONFIG" --data "$TOKENS" --out "$RUN/train" \
    --deepspeed ds_configs/zero2.json --resume "${INIT[@]}" data.code_noise=0.5 "$@"
# house voices: the AR draws codebook 1 in the flite voice nearest the prompt, the NAR adds the prompt's voice
# (lm/inference/house_voices.py; README "House voices"); the espeak-ng voices read worse and are left out
$PY scripts/make_house_voices.py --export "$RUN/train/export" --tokens "$TOKENS" --default \
    --voices flite_slt_1_170 flite_awb_1_120 flite_kal16_1_105 flite_rms_0_90 flite_rms_1_100 flite_slt_1_200
echo "export: $RUN/train/export (publish it: python scripts/publish_default.py --export $RUN/train/export" \
    "--decode temperature=0.15 --decode ar_voice=house --decode candidates=4 --decode judge=phones+words)"
