#!/usr/bin/env python
"""Ingest a speech corpus into raw WebDataset shards ({key}.flac + {key}.json), with validation.

Examples:
  python scripts/ingest.py --input tests/data/speech/ljspeech-sample --output data/raw/lj
  python scripts/ingest.py --input /data/LJSpeech-1.1 --output data/raw/ljspeech --format ljspeech
  python scripts/ingest.py --input /data/LibriTTS/train-clean-100 --output data/raw/libritts --workers 8
  python scripts/ingest.py --input my_voice/ --output data/raw/my_voice --speaker me   # wav + .txt files

Writes OUTPUT/raw-000000.tar ..., OUTPUT/rejects.jsonl (every item not used, with the reason) and
OUTPUT/summary.json. Exits with status 1 when no item was accepted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import format_summary, ingest
from data_pipeline.ingest.sources import FORMATS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = IngestConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--input", required=True, help="corpus folder, manifest (.tsv/.csv/.jsonl/.json) or metadata.csv"
    )
    p.add_argument("--output", required=True, help="output folder for the shards")
    p.add_argument("--format", choices=FORMATS, default=d.format, help="input layout (default: %(default)s)")
    p.add_argument("--speaker", default=None, help="use this speaker name for every item")
    p.add_argument(
        "--shard-size-mb", type=float, default=d.shard_size_mb, help="max shard size (%(default)s)"
    )
    p.add_argument("--shard-max-count", type=int, default=d.shard_max_count, help="max clips per shard")
    p.add_argument(
        "--min-seconds", type=float, default=d.min_seconds, help="reject shorter clips (%(default)s)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=d.max_seconds, help="reject longer clips (%(default)s)"
    )
    p.add_argument(
        "--silence-dbfs",
        type=float,
        default=d.silence_dbfs,
        help="reject clips whose RMS is below this many dBFS (%(default)s)",
    )
    p.add_argument(
        "--clip-level",
        type=float,
        default=d.clip_level,
        help="|sample| counted as clipped, full scale 1.0 (%(default)s)",
    )
    p.add_argument(
        "--max-clip-fraction",
        type=float,
        default=d.max_clip_fraction,
        help="reject clips with more clipped samples than this fraction (%(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help="decoding processes; 0 = in the main process (%(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace earlier ingest output in --output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = IngestConfig(
            format=args.format,
            speaker=args.speaker,
            shard_size_mb=args.shard_size_mb,
            shard_max_count=args.shard_max_count,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            silence_dbfs=args.silence_dbfs,
            clip_level=args.clip_level,
            max_clip_fraction=args.max_clip_fraction,
            workers=args.workers,
            overwrite=args.overwrite,
        )
        summary = ingest(args.input, args.output, cfg, progress=not args.quiet)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as e:
        logging.getLogger("ingest").error("%s", e)
        return 2
    print(format_summary(summary))
    return 0 if summary.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
