"""scripts/bench_generate.py still runs (no timing asserted: speed targets live in the benchmark's own table).
It once broke unnoticed when the decode step started returning (logits, delayed logits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_generate_prints_a_row_for_a_two_codebook_ar() -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_generate.py"), "--presets", "tiny", "--frames", "24",
           "--rounds", "1", "--recompute-samples", "2", "--ar-codebooks", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("tiny/ar2")).split()
    # tiny is timed as a full recompute run; "speedup" is the KV cache's gain over it
    at = row.index("full")
    assert row[at + 1] == "run" and float(row[at + 2].rstrip("x")) > 0
    numbers = [float(v.rstrip("%x").replace("M", "")) for v in row[1:at] + row[at + 3 :]]
    assert all(v >= 0 for v in numbers) and float(row[at - 2]) > 0  # KV t/s
