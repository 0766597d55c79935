#!/usr/bin/env python
"""Average the weights of several exports of one model (a "model soup": checkpoints of one run, or arms
warm-started from one export) into a new export directory that loads like any other.

    python scripts/average_exports.py --out runs/soup runs/a/train/export runs/b/train/export

The exports must share the model config, the codec and the text tokenizer; everything but the weights
(config, tokenizer, codec copy) comes from the first, and metadata.averaged_from lists the sources.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from codec.identity import codec_identity
from lm.checkpoint import CONFIG_FILE, MODEL_FILE, read_config, save_model


def _codec_of(export: Path, meta: dict) -> str:
    """The identity of the codec an export's tokens come from (its copy or the directory it points at)."""
    path = export / str(meta.get("codec", ""))
    return codec_identity(path) if path.is_dir() else str(meta.get("codec"))


def average_exports(sources: list[Path], out: Path) -> Path:
    if len(sources) < 2:
        raise ValueError("average at least two exports")
    config, meta = read_config(sources[0])
    tokenizer, codec = sources[0] / str(meta["text_tokenizer"]), _codec_of(sources[0], meta)
    metas = [meta]
    for src in sources[1:]:
        other_config, other_meta = read_config(src)
        metas.append(other_meta)
        if other_config != config:
            raise ValueError(f"{src}: its model config differs from {sources[0]}'s; only one model averages")
        if not filecmp.cmp(src / str(other_meta["text_tokenizer"]), tokenizer, shallow=False):
            raise ValueError(f"{src}: its text tokenizer differs from {tokenizer}")
        if _codec_of(src, other_meta) != codec:
            raise ValueError(f"{src}: another codec ({_codec_of(src, other_meta)}, not {codec})")
    total: dict[str, torch.Tensor] = {}
    for src in sources:
        for name, tensor in load_file(str(src / MODEL_FILE)).items():
            total[name] = total.get(name, 0) + tensor.float()
    state = {name: t / len(sources) for name, t in total.items()}
    out.mkdir(parents=True, exist_ok=True)
    for item in sources[0].iterdir():
        if item.name in (MODEL_FILE, CONFIG_FILE):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
    metadata = dict(meta, averaged_from=[str(s) for s in sources],
                    train_step=max(int(m.get("train_step", 0)) for m in metas))
    return save_model(None, config, out, metadata, state_dict=state)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exports", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        out = average_exports(args.exports, args.out)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"averaged {len(args.exports)} exports into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
