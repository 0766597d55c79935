#!/usr/bin/env python
"""Training throughput of one process (CPU or one GPU) for a preset, across DeepSpeed variants.

    python scripts/bench_train.py --preset tiny --steps 30
    python scripts/bench_train.py --preset small --data runs/demo/tokens --steps 20   # on a GPU: + MFU

Every variant trains the same model on the same batches (fresh run directory each); the table gives the
median tokens/s (AR sequence tokens, padding excluded) and s/step over the steps after the first
`--warmup`, with the ratio against the first variant (ZeRO-2, the default) measured in the same run.
Variants run round-robin `--repeats` times and the best repeat counts, so a burst of load from other
processes on a shared machine does not decide a ratio.
Without --data, token shards of random codes are written to a temporary directory (transcripts from
tests/data/speech), so the numbers measure the trainer, not a dataset.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np

from data_pipeline.records import TokenMeta
from data_pipeline.tokens.token_shards import token_sample, write_shard_atomically
from lm.training.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "zero2": ("zero2.json", []),
    "zero1": ("zero1.json", []),
    "zero3": ("zero3.json", []),
    "zero2 + activation checkpointing": ("zero2.json", ["activation_checkpointing=true"]),
}


def synthetic_shards(out: Path, num_shards: int = 4, per_shard: int = 32, seed: int = 0) -> Path:
    """Token shards of random 2-codebook codes (1-3 s at 75 Hz) with the repository's transcripts."""
    with open(ROOT / "tests" / "data" / "speech" / "MANIFEST.tsv", newline="") as f:
        rows = [(r["speaker"], r["transcript"]) for r in csv.DictReader(f, delimiter="\t")]
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for s in range(num_shards):
        samples = []
        for i in range(per_shard):
            n = s * per_shard + i
            speaker, text = rows[n % len(rows)]
            frames = int(rng.integers(75, 226))
            codes = rng.integers(0, 1024, (2, frames)).astype(np.int16)
            meta = TokenMeta(text=text, speaker=speaker, duration=frames / 75.0, sample_rate=24000,
                             source="synthetic", codec="encodec_24khz:random@1.5", frame_rate=75.0,
                             num_frames=frames, num_codebooks=2, extra={"codebook_size": 1024})
            samples.append(token_sample(f"b{n:05d}", codes, meta))
        write_shard_atomically(out / f"tokens-{s:06d}.tar", samples)
    return out


def run_variant(data: Path, out: Path, preset: str, ds_file: str, extra: list[str], steps: int) -> list[dict]:
    from lm.training.trainer import train

    cfg = resolve_config(
        flags={"preset": preset, "max_steps": steps, "data": {"train": str(data)}},
        overrides=["log.every=1", "eval_every=0", "checkpoint_every=0", "export=false",
                   "log.tensorboard=false", "data.batching.max_frames=3000", "data.batching.max_seconds=4.0",
                   "tokenizer.vocab_size=512", *extra],
    )
    train(cfg, out, ROOT / "ds_configs" / ds_file)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", type=Path, default=None, help="token shards (default: synthetic)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians")
    p.add_argument("--repeats", type=int, default=2, help="round-robin repeats; the best one counts")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_shards(Path(tmp) / "tokens")
        results: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for name in args.variants:
                ds_file, extra = VARIANTS[name]
                out = Path(tmp) / f"{name.replace(' ', '_')}-{repeat}"
                rows = run_variant(data, out, args.preset, ds_file, extra, args.steps)[args.warmup:]
                measured = {
                    "tok/s": statistics.median(r["tokens_per_s"] for r in rows),
                    "s/step": statistics.median(r["seconds_per_step"] for r in rows),
                    "mfu": statistics.median(r["mfu"] for r in rows) if "mfu" in rows[0] else None,
                }
                if name not in results or measured["tok/s"] > results[name]["tok/s"]:
                    results[name] = measured
                print(f"repeat {repeat}: {name}: {measured['tok/s']:.0f} tok/s", flush=True)
    base = results[args.variants[0]]["tok/s"]
    print(f"\npreset {args.preset}, {args.steps} steps (median over steps > {args.warmup}, best of "
          f"{args.repeats}), one process")
    print(f"{'variant':36s} {'tok/s':>10s} {'s/step':>8s} {'ratio':>7s} {'MFU':>7s}")
    for name, r in results.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{name:36s} {r['tok/s']:10.0f} {r['s/step']:8.3f} {r['tok/s'] / base:7.2f} {mfu:>7s}")


if __name__ == "__main__":
    main()
