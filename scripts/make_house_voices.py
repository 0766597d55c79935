#!/usr/bin/env python
"""Give an export its house voices: a few seconds of codes from each named training voice, and their speaker
embeddings, written to EXPORT/house_voices.safetensors (lm/inference/house_voices.py says why).

    python scripts/make_house_voices.py --export models/default --tokens data/tts_tokens_v3c \
        --voices flite_awb_1_120 flite_kal16_1_105 flite_rms_0_90 flite_rms_1_100 flite_slt_1_170 \
                 flite_slt_1_200 --default

Each voice's clip is the first of its utterances (shards in name order) long enough for the crop
(`--offset-seconds` in, `--seconds` long: the length of the speaker prompts the model trained with).
`--default` also makes ar_voice="house" the export's decoding default (config.json metadata.decode).
The token folder must hold the export's codec's tokens (its codec.json is checked).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from codec.identity import codec_identity
from data_pipeline.loading.token_reader import LoaderStats, read_token_shard
from data_pipeline.sharding import expand_shards
from data_pipeline.tokens.token_codec import MARKER
from lm.checkpoint import CONFIG_FILE
from lm.inference.export_dir import _codec_spec
from lm.inference.house_voices import HouseVoice, HouseVoices
from lm.inference.speaker_embedding import SpeakerEncoder
from lm.inference.synthesizer import Synthesizer

log = logging.getLogger("make_house_voices")


def voice_clips(tokens: Path, voices: list[str], num_codebooks: int, start: int, frames: int,
                whole: bool) -> dict[str, HouseVoice]:
    """{voice: HouseVoice without its embedding}: with `whole`, the first utterance of each voice of at most
    `frames` frames (and at least half that) with its transcript and phones; else a crop of `frames` frames
    from `start` of the first utterance long enough."""
    found: dict[str, HouseVoice] = {}
    stats = LoaderStats()
    for shard in expand_shards(str(tokens)):
        for utt in read_token_shard(shard, stats, num_codebooks):
            if utt.speaker not in voices or utt.speaker in found:
                continue
            n = utt.codes.shape[1]
            codes = torch.from_numpy(utt.codes[:num_codebooks].astype(np.int64))
            if whole and frames // 2 <= n <= frames and utt.frame_phones is not None:
                found[utt.speaker] = HouseVoice(utt.speaker, codes, torch.zeros(0), utt.text,
                                                torch.from_numpy(utt.frame_phones.astype(np.int64)))
                log.info("%s: %s (%.1f s) %r", utt.speaker, utt.key, n / utt.frame_rate, utt.text)
            elif not whole and n >= start + frames:
                found[utt.speaker] = HouseVoice(utt.speaker, codes[:, start:start + frames], torch.zeros(0))
                log.info("%s: %s frames %d-%d", utt.speaker, utt.key, start, start + frames)
        if len(found) == len(voices):
            break
    missing = [v for v in voices if v not in found]
    if missing:
        raise SystemExit(f"{tokens}: no fitting utterance of {missing} ({stats.samples} utterances read)")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, required=True, help="export directory of a phone-aligned model")
    p.add_argument("--tokens", type=Path, required=True, help="token folder of the model's training corpus")
    p.add_argument("--voices", nargs="+", required=True, help="speaker names; the first is the fallback")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--offset-seconds", type=float, default=1.0, help="skip the clip's leading silence")
    p.add_argument("--whole-utterance", action="store_true",
                   help="store whole utterances of at most --seconds with transcript and phones: the AR "
                        "continues them (continuation mode) instead of reading a crop as a speaker prompt")
    p.add_argument("--default", action="store_true", help="make ar_voice='house' the export's default")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    synth = Synthesizer.from_pretrained(args.export)
    if args.whole_utterance and not synth.phone_aligned:
        raise SystemExit(f"{args.export}: --whole-utterance needs a phone-aligned model (it continues the "
                         "house voice's utterance with its phones)")
    marker = args.tokens / MARKER
    if not marker.is_file():
        raise SystemExit(f"{marker}: not a token folder made by tokenize_shards.py")
    config_path = args.export / CONFIG_FILE
    config = json.loads(config_path.read_text())
    spec = _codec_spec(args.export, config.get("metadata", {}))
    if json.loads(marker.read_text()).get("identity") != codec_identity(spec):
        raise SystemExit(f"{args.tokens} holds another codec's tokens than {args.export} ({spec})")
    rate = synth.codec.frame_rate
    clips = voice_clips(args.tokens, args.voices, synth.model.config.num_codebooks,
                        round(args.offset_seconds * rate), round(args.seconds * rate), args.whole_utterance)
    encoder = SpeakerEncoder()
    bank = []
    for name in args.voices:
        voice = clips[name]
        with torch.inference_mode():
            wav = synth.codec.decode(voice.codes[None].to(synth.codec.device))[0, 0].float().cpu().numpy()
        voice.embedding = torch.from_numpy(encoder.embed(wav, synth.sample_rate))
        bank.append(voice)
    path = HouseVoices(bank).save(args.export)
    if args.default:
        meta = config.setdefault("metadata", {})
        meta["decode"] = {**meta.get("decode", {}), "ar_voice": "house"}
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {path}: {', '.join(args.voices)}" + (" (ar_voice='house' is the default)" if args.default
                                                     else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
