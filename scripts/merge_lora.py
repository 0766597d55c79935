#!/usr/bin/env python
"""Merge a LoRA adapter into its base model: a self-contained export directory that needs no adapter.

    python scripts/merge_lora.py --checkpoint models/default --adapter runs/lora_me/adapter \\
        --out runs/lora_me/merged
    python scripts/generate.py --checkpoint runs/lora_me/merged --prompt-audio p.wav --text "Hi." --out hi.wav

The adapter must have been trained on --checkpoint (its base_model.json fingerprint is checked). The output
holds the merged model.safetensors + config.json (metadata.merged_adapter says what was merged) and a copy
of the base export's tokenizer, codec reference and training config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lm.adapters.lora import AdapterError, adapter_bytes, merge_to_export
from lm.checkpoint import MODEL_FILE

log = logging.getLogger("merge_lora")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="the base model's export directory")
    p.add_argument("--adapter", type=Path, required=True,
                   help="adapter directory (OUT/adapter of finetune_lora.py)")
    p.add_argument("--out", type=Path, required=True, help="output export directory (replaced if present)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        out = merge_to_export(args.checkpoint, args.adapter, args.out)
    except (AdapterError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size, model = adapter_bytes(args.adapter), (out / MODEL_FILE).stat().st_size
    print(f"merged {args.adapter} ({size / 2**20:.2f} MiB, {100 * size / model:.2f} % of the model) into "
          f"{args.checkpoint} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
