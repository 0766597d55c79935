#!/usr/bin/env python
"""Ingest throughput: clips/s and audio seconds per wall second, by number of worker processes.

Builds a temporary folder corpus from the repo's speech clips (tests/data/speech, each copied --copies
times), ingests it with 0 workers (the baseline: everything in the main process) and with each --workers
value, and prints a table with the speed-up against the baseline measured in the same run.

  python scripts/bench_ingest.py --copies 10 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.ingest.manifest import read_manifest

SPEECH = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech"


def build_corpus(root: Path, copies: int) -> int:
    """Folder layout (speaker/utt.wav + utt.txt); returns the number of bytes of source audio."""
    total = 0
    for manifest in sorted(SPEECH.glob("*/transcripts.tsv")):
        for row in read_manifest(manifest):
            for i in range(copies):
                dst = root / f"{row.speaker}" / f"{row.audio.stem}_{i}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(row.audio, dst.with_suffix(row.audio.suffix))
                dst.with_suffix(".txt").write_text(row.text)
                total += row.audio.stat().st_size
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=10, help="copies of each test clip (%(default)s)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        source_bytes = build_corpus(corpus, args.copies)
        rows = []
        for workers in [0, *args.workers]:
            out = Path(tmp) / f"out{workers}"
            start = time.perf_counter()
            s = ingest(corpus, out, IngestConfig(workers=workers, shard_size_mb=64), progress=False)
            wall = time.perf_counter() - start
            shard_bytes = sum(x["bytes"] for x in s.shards)
            rows.append((workers, s.accepted, s.accepted_hours * 3600, wall, shard_bytes))
    base_wall = rows[0][3]
    minutes, mib = rows[0][2] / 60, source_bytes / 2**20
    print(f"corpus: {rows[0][1]} clips, {minutes:.1f} min of audio, {mib:.1f} MiB of WAV")
    header = ("workers", "clips", "wall s", "clips/s", "audio s/s", "shards MiB", "speed-up")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (8, 6, 7, 8, 10, 11, 9), strict=True)))
    for workers, clips, audio_s, wall, shard_bytes in rows:
        print(
            f"{workers:>8} {clips:>6} {wall:>7.2f} {clips / wall:>8.1f} {audio_s / wall:>10.0f} "
            f"{shard_bytes / 2**20:>11.1f} {base_wall / wall:>8.2f}x"
        )


if __name__ == "__main__":
    main()
