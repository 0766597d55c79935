#!/usr/bin/env python
"""Tokenize raw shards ({key}.flac + {key}.json) into token shards ({key}.codes.npy + {key}.json).

Examples:
  python scripts/tokenize_shards.py --input runs/demo/raw --output runs/demo/tokens \\
      --codec encodec_24khz:random
  python scripts/tokenize_shards.py --input data/raw/libritts --output data/tok/libritts \\
      --codec encodec_24khz@6 --device cuda --batch-seconds 600
  torchrun --nproc_per_node 8 scripts/tokenize_shards.py --input ... --output ... --device cuda
  deepspeed --num_gpus 8 scripts/tokenize_shards.py --input ... --output ... --device cuda

One output shard per input shard (raw-000012.tar -> tokens-000012.tar), committed by an atomic rename:
rerun the same command after a crash and finished shards are skipped. Every rank / worker takes a disjoint
subset of the shards. Clips that cannot be decoded or encoded are listed in OUTPUT/rejects.jsonl; per-shard
summaries go to OUTPUT/summaries/. Exits with status 1 when nothing could be written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from data_pipeline.tokens.config import ALIGN_MODES, TokenizeConfig
from data_pipeline.tokens.tokenize import tokenize_shards


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TokenizeConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="raw shard folder, glob or brace pattern")
    p.add_argument("--output", required=True, help="folder for the token shards")
    p.add_argument("--codec", default=d.codec,
                   help="codec spec: encodec_24khz[@KBPS], encodec_24khz:random, or a codec checkpoint dir "
                        "(default: %(default)s)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch-seconds", type=float, default=None,
                      help="padded audio per codec forward, seconds (default: 8 on CPU, 200 on GPU); "
                           "0 = one clip per forward")
    size.add_argument("--batch-frames", type=int, default=None,
                      help="padded audio per codec forward, in codec frames (instead of --batch-seconds)")
    p.add_argument("--window-seconds", type=float, default=d.window_seconds,
                   help="decoded audio held at once for length sorting (default: %(default)s)")
    p.add_argument("--device", default=d.device,
                   help="cpu, cuda (= cuda:LOCAL_RANK) or cuda:N (default: cpu)")
    p.add_argument("--num-workers", type=int, default=d.num_workers,
                   help="tokenizer processes on this machine (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of a ':random' codec (default: %(default)s)")
    p.add_argument("--align", choices=ALIGN_MODES, default=d.align,
                   help="phone alignments: exact = keep synthesiser timings only; auto = also force-align "
                        "every other clip (rejecting clips that do not fit their transcript); off = none "
                        "(default: %(default)s)")
    p.add_argument("--aligner", default=None, help="aligner directory (default: models/aligner)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # the deepspeed launcher appends --local_rank=N (torchrun sets LOCAL_RANK instead)
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TokenizeConfig(codec=args.codec, window_seconds=args.window_seconds, device=args.device,
                         num_workers=args.num_workers, seed=args.seed, progress=not args.quiet,
                         align=args.align, aligner=args.aligner)
    cfg.batch_seconds, cfg.batch_frames = args.batch_seconds, args.batch_frames
    run = tokenize_shards(args.input, args.output, cfg)
    speed = run.audio_seconds / run.seconds if run.seconds else 0.0
    print(f"shards   {run.shards} owned: {run.done} tokenized, {run.skipped} already done")
    print(f"clips    {run.clips}: {run.written} written ({run.aligned} with phone alignments), "
          f"{run.rejected} rejected")
    print(f"audio    {run.audio_seconds / 3600:.3f} h in {run.seconds:.1f} s ({speed:.1f} audio s / s, "
          f"{run.forwards} codec forwards)")
    if run.rejected:
        print(f"rejects  listed in {args.output}/rejects.jsonl")
    return 0 if run.written or run.skipped or not run.shards else 1


if __name__ == "__main__":
    sys.exit(main())
