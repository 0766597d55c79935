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
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from lm.checkpoint import CONFIG_FILE, MODEL_FILE, save_model
from lm.model.config import ModelConfig


def average_exports(sources: list[Path], out: Path) -> Path:
    if len(sources) < 2:
        raise ValueError("average at least two exports")
    configs = [json.loads((s / CONFIG_FILE).read_text()) for s in sources]
    for src, cfg in zip(sources[1:], configs[1:], strict=True):
        if cfg["model"] != configs[0]["model"]:
            raise ValueError(f"{src}: its model config differs from {sources[0]}'s; only one model averages")
        for name in ("tokenizer.model",):
            if not filecmp.cmp(src / name, sources[0] / name, shallow=False):
                raise ValueError(f"{src / name} differs from {sources[0] / name}: another text tokenizer")
        if cfg["metadata"].get("codec") != configs[0]["metadata"].get("codec"):
            raise ValueError(f"{src}: another codec ({cfg['metadata'].get('codec')})")
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
    metadata = dict(configs[0]["metadata"], averaged_from=[str(s) for s in sources],
                    train_step=max(int(c["metadata"].get("train_step", 0)) for c in configs))
    return save_model(None, ModelConfig.from_dict(configs[0]["model"]), out, metadata, state_dict=state)


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
