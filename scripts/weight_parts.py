#!/usr/bin/env python
"""Split a model.safetensors into parts under a size limit, and join the parts back, bit for bit (a file
transfer that limits each file's size, e.g. the lent GPU machine's: scripts/train_on_lent_gpu.sh).

    python scripts/weight_parts.py split export/model.safetensors out/a_w   # out/a_w.0.safetensors, ...
    python scripts/weight_parts.py split --float16 ...   # half the bytes, as models/default ships
    python scripts/weight_parts.py join out/a_w runs/gpu_a/export/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PART_LIMIT_BYTES = 15_000_000


def split(source: Path, prefix: Path, limit: int = PART_LIMIT_BYTES, float16: bool = False) -> list[Path]:
    """Tensors in name order, a new part whenever the next one would pass `limit` bytes; `float16` stores
    floating tensors in half precision (scripts/publish_default.py publishes them so anyway)."""
    state = load_file(source)
    if float16:
        state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}
    parts: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if nbytes > limit:
            raise ValueError(f"{source}: tensor {name} alone is {nbytes} bytes, over the part limit {limit}")
        if size + nbytes > limit and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][name] = state[name]
        size += nbytes
    paths = []
    for index, part in enumerate(parts):
        path = prefix.parent / f"{prefix.name}.{index}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(part, path)
        paths.append(path)
    return paths


def join(prefix: Path, target: Path) -> Path:
    paths = sorted(prefix.parent.glob(f"{prefix.name}.*.safetensors"),
                   key=lambda p: int(p.name[len(prefix.name) + 1:].split(".")[0]))
    if not paths:
        raise FileNotFoundError(f"no parts {prefix}.N.safetensors")
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        part = load_file(path)
        clash = state.keys() & part.keys()
        if clash:
            raise ValueError(f"{path}: tensors {sorted(clash)[:3]} are in an earlier part too")
        state.update(part)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["split", "join"])
    p.add_argument("source", type=Path, help="split: the safetensors file; join: the parts' prefix")
    p.add_argument("target", type=Path, help="split: the parts' prefix; join: the file to write")
    p.add_argument("--float16", action="store_true", help="split: store floating tensors as float16")
    args = p.parse_args(argv)
    try:
        if args.action == "split":
            for path in split(args.source, args.target, float16=args.float16):
                print(path)
        else:
            print(join(args.source, args.target))
    except (FileNotFoundError, ValueError) as err:
        print(f"weight_parts: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
