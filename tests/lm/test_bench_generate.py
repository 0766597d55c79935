"""scripts/bench_generate.py still runs, and the figures of its table agree with one another (no speed is
asserted: speed targets live in the benchmark's own table). It once broke unnoticed when the decode step
started returning (logits, delayed logits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lm.model.config import get_preset
from lm.model.model import TTSModel

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 24
FRAME_RATE = 75.0  # encodec_24khz:random, the benchmark's default codec
# the row's columns before and after "method" (which prints as two words, "full run")
BEFORE = ["params", "step_MB", "kv_MB", "copy_GBs", "read_GBs", "floor_tps", "step_tps", "share", "matvec",
          "kv_tps", "recompute_tps"]
AFTER = ["speedup", "kv_s", "wall_s", "prefill_ms", "nar_s", "codec_s", "rtf"]


class Printed:
    """A printed figure: the interval [lo, hi] its true value lies in, given the digits printed."""

    def __init__(self, text: str) -> None:
        digits = text.rstrip("%xM")
        self.value = float(digits)
        self.half = 0.5 * 10.0 ** -(len(digits.split(".")[1]) if "." in digits else 0)
        self.lo, self.hi = self.value - self.half, self.value + self.half

    def agrees(self, lo: float, hi: float) -> bool:
        """Whether this is what a true value in [lo, hi] prints as."""
        return lo - self.half <= self.value <= hi + self.half


def test_bench_generate_prints_a_consistent_row_for_a_two_codebook_ar() -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_generate.py"), "--presets", "tiny",
           "--frames", str(FRAMES), "--rounds", "1", "--recompute-samples", "2", "--ar-codebooks", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("tiny/ar2")).split()
    # tiny is timed as a full recompute run; "speedup" is the KV cache's gain over it
    at = row.index("full")
    assert row[at + 1] == "run"
    figure = {name: Printed(v) for name, v in zip(BEFORE + AFTER, row[1:at] + row[at + 2 :], strict=True)}

    # the model's size, and the bytes of a step: weights plus a KV cache that is part of them
    params = TTSModel(get_preset("tiny").replace(ar_codebooks=2)).num_parameters() / 1e6
    assert figure["params"].lo <= params <= figure["params"].hi
    step, kv = figure["step_MB"], figure["kv_MB"]
    assert 0 < kv.value < step.value
    # floor = the step's bytes at the better of the two measured bandwidths
    bandwidth = max(figure["copy_GBs"], figure["read_GBs"], key=lambda f: f.value)
    floor = figure["floor_tps"]
    assert floor.agrees(bandwidth.lo * 1e3 / step.hi, bandwidth.hi * 1e3 / step.lo)
    # share = floor time / step time = step t/s / floor t/s
    step_tps = figure["step_tps"]
    assert figure["share"].agrees(100 * step_tps.lo / floor.hi, 100 * step_tps.hi / floor.lo)
    # the cached run: timed on the thread's CPU clock, which cannot run ahead of the wall clock
    kv_s, wall_s = figure["kv_s"], figure["wall_s"]
    assert 0 < kv_s.value <= wall_s.value
    # speedup = recompute time / cached time, the recompute time being FRAMES / recompute t/s
    recompute_s = (FRAMES / figure["recompute_tps"].hi, FRAMES / figure["recompute_tps"].lo)
    assert figure["speedup"].agrees(recompute_s[0] / kv_s.hi, recompute_s[1] / kv_s.lo)
    # RTF = (AR + NAR + codec seconds) / audio seconds
    audio_s = FRAMES / FRAME_RATE
    parts = [figure[k] for k in ("kv_s", "nar_s", "codec_s")]
    assert figure["rtf"].agrees(sum(p.lo for p in parts) / audio_s, sum(p.hi for p in parts) / audio_s)
