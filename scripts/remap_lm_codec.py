#!/usr/bin/env python
"""Move a trained LM export onto a new codec: keep its layers, rebuild its code tables from paired tokens.

    python scripts/tokenize_shards.py --input data/tts_raw_v2 --output data/tts_tokens_v3c \
        --codec models/codec_rvq16k_v3 --align auto         # the same raw shards, the new codec
    python scripts/remap_lm_codec.py --checkpoint models/default --old-tokens data/tts_tokens_v2 \
        --new-tokens data/tts_tokens_v3c --out runs/remap_v3/export
    python scripts/train.py ... --data data/tts_tokens_v3c init_from=runs/remap_v3/export   # then fine-tune

`--old-tokens` must be the model's own codec's tokens and `--new-tokens` the new codec's, of the same raw
shards (checked: each folder's codec.json). The export records the new codec (copied in as `codec/`), keeps
the text tokenizer and the step count, and notes `codec_remapped_from`. How: lm/adapters/codec_remap.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from codec.identity import codec_identity
from data_pipeline.tokens.token_codec import MARKER
from lm.adapters.codec_remap import agreement, cooccurrence, remap_state
from lm.checkpoint import MODEL_FILE, read_config
from lm.model.vocab import Vocab
from lm.training.export import export_inference_dir

log = logging.getLogger("remap_lm_codec")


def folder_codec(folder: Path) -> dict:
    path = folder / MARKER
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a token folder made by tokenize_shards.py (no {MARKER})")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="LM export (e.g. models/default)")
    p.add_argument("--old-tokens", required=True, type=Path, help="token folder of the model's own codec")
    p.add_argument("--new-tokens", required=True, type=Path, help="the same clips tokenized by the new codec")
    p.add_argument("--out", required=True, type=Path, help="new export directory")
    p.add_argument("--max-clips", type=int, default=None, help="pair at most this many clips")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config, meta = read_config(args.checkpoint)
    model_codec = codec_identity(args.checkpoint / str(meta["codec"]))
    old, new = folder_codec(args.old_tokens), folder_codec(args.new_tokens)
    if old["identity"] != model_codec:
        p.error(f"{args.old_tokens} holds tokens of {old['spec']} ({old['identity']}), but "
                f"{args.checkpoint} was trained on {meta['codec']} ({model_codec})")
    if new["identity"] == model_codec:
        p.error(f"{args.new_tokens} holds the model's own codec's tokens: nothing to remap")
    counts, paired = cooccurrence(args.old_tokens, args.new_tokens, config.num_codebooks,
                                  config.codebook_size, args.max_clips)
    log.info("paired %d clips, %d frames; old code = the new code's most frequent old one on %s of frames "
             "(levels 1..%d)", paired, int(counts[0].sum()),
             " / ".join(f"{a:.1%}" for a in agreement(counts)), config.num_codebooks)
    state = {k: v.to(torch.float32) for k, v in load_file(str(args.checkpoint / MODEL_FILE)).items()}
    state = remap_state(state, counts, Vocab.from_config(config).audio_offset, config.codebook_size)
    export_inference_dir(
        args.out, config, state, args.checkpoint / str(meta["text_tokenizer"]), new["spec"],
        metadata={**{k: v for k, v in meta.items() if k not in ("codec", "codec_source", "text_tokenizer")},
                  "codec_remapped_from": {"codec": meta.get("codec_source", meta["codec"]),
                                          "identity": model_codec, "paired_clips": paired}})
    print(json.dumps({"out": str(args.out), "paired_clips": paired,
                      "agreement": [round(a, 4) for a in agreement(counts)]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
