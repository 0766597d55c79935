#!/usr/bin/env python
"""Publish a training export as the embedded default model (`models/default`), small enough to commit.

    python scripts/publish_default.py --export runs/lm_default/train/export --out models/default

Weights are stored in fp16 (they load back into fp32 modules), the text tokenizer is copied, and when the
export carries a copy of a codec that already lives in the repository (`--codec-dir`; by default the
`models/codec_*` directory with the same files) the config points at that directory instead of duplicating
it. The result loads with `Synthesizer.from_pretrained`.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lm.checkpoint import CONFIG_FILE, FORMAT, MODEL_FILE
from lm.inference.house_voices import HOUSE_VOICES_FILE
from lm.inference.synthesis_types import DecodeConfig
from lm.training.export import CODEC_DIR

ROOT = Path(__file__).resolve().parents[1]


def same_codec(a: Path, b: Path) -> bool:
    names = ("config.json", "model.safetensors")
    return all((a / n).is_file() and (b / n).is_file() and filecmp.cmp(a / n, b / n, shallow=False)
               for n in names)


def publish(export: Path, out: Path, codec_dir: Path | None, decode: dict | None = None) -> Path:
    config = json.loads((export / CONFIG_FILE).read_text())
    meta = config.setdefault("metadata", {})
    if decode:  # the decoding defaults that measured best for this model (Synthesizer reads metadata.decode)
        meta["decode"] = {**meta.get("decode", {}), **decode}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = load_file(str(export / MODEL_FILE))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()},
              str(tmp / MODEL_FILE), metadata={"format": FORMAT, "stored_dtype": "float16"})
    shutil.copyfile(export / meta["text_tokenizer"], tmp / meta["text_tokenizer"])
    local_codec = export / str(meta.get("codec", ""))
    if local_codec.is_dir():
        # the committed codec directory with the same files is referenced instead of copied
        candidates = [codec_dir] if codec_dir is not None else sorted((ROOT / "models").glob("codec_*"))
        repo_codec = next((d for d in candidates if same_codec(local_codec, d)), None)
        if repo_codec is not None:
            meta["codec"] = os.path.relpath(repo_codec.resolve(), out.resolve())
        else:
            shutil.copytree(local_codec, tmp / CODEC_DIR)
    for extra in ("train_config.yaml", HOUSE_VOICES_FILE):
        if (export / extra).is_file():
            shutil.copyfile(export / extra, tmp / extra)
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if out.exists():
        card = out / "MODEL_CARD.md"
        if card.is_file():
            shutil.copyfile(card, tmp / card.name)
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def scalar(value: str) -> int | float | str:
    """A --decode value: a number when it reads as one (0.3, 50), else the text (ar_voice=house)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, required=True, help="export directory written by scripts/train.py")
    p.add_argument("--out", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--codec-dir", type=Path, default=None,
                   help="a codec directory in the repo to reference instead of copying (default: the "
                        "models/codec_* directory equal to the export's codec copy)")
    p.add_argument("--decode", action="append", default=[], metavar="KEY=VALUE",
                   help="a decoding default stored with the model, e.g. temperature=0.5 (repeatable)")
    args = p.parse_args(argv)
    try:
        decode = {key: scalar(value) for key, value in (item.split("=", 1) for item in args.decode)}
        DecodeConfig().updated(decode)
    except (ValueError, TypeError) as err:
        p.error(f"--decode: {err}")
    if not (args.export / CONFIG_FILE).is_file():
        p.error(f"{args.export}: not an export directory (no {CONFIG_FILE})")
    out = publish(args.export, args.out, args.codec_dir, decode)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"published {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
