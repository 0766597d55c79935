#!/usr/bin/env python
"""Benchmark the forced aligner against exact synthesiser timings, on voices, speeds and sentences its
classifier never trained on (data_pipeline/alignment/synthetic_set.py HELDOUT_VOICES and sentences).

    python scripts/bench_align.py [--clips 120] [--aligner models/aligner]

Prints, per engine and overall: word-boundary and phone-boundary errors (median, share within 20 / 50 ms)
and speed (audio seconds aligned per wall second, one thread). The baseline, measured in the same run on
the same clips, is hama's greedy CTC path (a word starts at its first emission after a word-boundary
token): what a CTC recogniser gives without forced alignment. Ratios are baseline / aligner on the
word-start median.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data_pipeline.alignment.aligner import DEFAULT_ALIGNER, Aligner, AlignmentError  # noqa: E402
from data_pipeline.alignment.features import FRAME_RATE, hama_log_probs  # noqa: E402
from data_pipeline.alignment.scoring import BoundaryErrors, boundary_errors, summary  # noqa: E402
from data_pipeline.alignment.synthetic_set import (  # noqa: E402
    HELDOUT_VOICES,
    plan,
    split_sentences,
    synthesize_timed,
)
from scripts.train_aligner import corpus_sentences  # noqa: E402


def greedy_word_starts(wav: np.ndarray) -> list[float]:
    """Baseline: word onsets from hama's greedy CTC path (first emission after each word boundary)."""
    log_probs = hama_log_probs(wav)
    ids = log_probs.argmax(-1)
    blank, boundary = log_probs.shape[1] - 1, log_probs.shape[1] - 2
    starts, prev, in_word = [], -1, False
    for frame, tok in enumerate(ids):
        if tok != prev and tok != blank:
            if tok == boundary:
                in_word = False
            elif not in_word:
                starts.append(frame / FRAME_RATE)
                in_word = True
        prev = tok
    return starts


def fmt(x: float, pct: bool = False) -> str:
    return "n/a" if x != x else (f"{100 * x:.1f} %" if pct else f"{x:.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=120)
    p.add_argument("--aligner", type=Path, default=DEFAULT_ALIGNER)
    p.add_argument("--sentences", type=Path,
                   default=ROOT.parent / "shared" / "text" / "ljspeech_sentences.tsv")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    aligner = Aligner.load(args.aligner)
    _, heldout_text = split_sentences(corpus_sentences(args.sentences))
    jobs = plan(heldout_text, HELDOUT_VOICES, args.clips, seed=args.seed)

    ours: dict[str, BoundaryErrors] = defaultdict(BoundaryErrors)
    starts_ours: dict[str, list[float]] = defaultdict(list)
    starts_base: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    wall: dict[str, float] = defaultdict(float)
    wall_base: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)  # process CPU seconds: the speed a busy machine does not hide
    failures = []
    for job in jobs:
        engine = job.voice.engine
        wav, truth = synthesize_timed(job.text, job.voice)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            hyp = aligner.align(wav, 16000, job.text)
        except AlignmentError as e:
            failures.append(f"{job.voice.name}: {e}")
            continue
        wall[engine] += time.perf_counter() - t0
        cpu[engine] += time.process_time() - c0
        seconds[engine] += truth.duration
        errs = boundary_errors(truth, hyp)
        ours[engine].extend(errs)
        merged = set(truth.extra.get("merged_words", []))
        truth_starts = [w.start for i, w in enumerate(truth.words) if i not in merged]
        starts_ours[engine] += [abs(h.start - t.start) for i, (h, t) in
                                enumerate(zip(hyp.words, truth.words, strict=True)) if i not in merged]
        t0 = time.perf_counter()
        base = greedy_word_starts(wav)
        wall_base[engine] += time.perf_counter() - t0
        starts_base[engine] += [abs(b - t) for b, t in zip(base, truth_starts, strict=False)]

    engines = sorted(seconds) + ["all"]

    def pool(d: dict, engine: str) -> list:
        return [x for k in d for x in d[k]] if engine == "all" else d[engine]

    rows, figures = [], {}
    for engine in engines:
        w = summary(pool({k: v.words for k, v in ours.items()}, engine))
        ph = summary(pool({k: v.phones for k, v in ours.items()}, engine))
        so, sb = summary(pool(starts_ours, engine)), summary(pool(starts_base, engine))
        secs = sum(seconds.values()) if engine == "all" else seconds[engine]
        t = sum(wall.values()) if engine == "all" else wall[engine]
        tb = sum(wall_base.values()) if engine == "all" else wall_base[engine]
        tc = sum(cpu.values()) if engine == "all" else cpu[engine]
        figures[engine] = {"words": w, "phones": ph, "word_starts": so, "baseline_word_starts": sb,
                           "audio_seconds": secs, "speed_x_realtime": secs / max(t, 1e-9),
                           "baseline_speed_x_realtime": secs / max(tb, 1e-9),
                           "cpu_speed_x_realtime": secs / max(tc, 1e-9)}
        rows.append(f"| {engine} | {w['n']} | {fmt(w['median_ms'])} | {fmt(w['within_20ms'], True)} | "
                    f"{fmt(w['within_50ms'], True)} | {ph['n']} | {fmt(ph['median_ms'])} | "
                    f"{fmt(ph['within_20ms'], True)} | {fmt(ph['within_50ms'], True)} | "
                    f"{fmt(sb['median_ms'])} / {fmt(so['median_ms'])} = "
                    f"{sb['median_ms'] / max(so['median_ms'], 1e-9):.1f}x | "
                    f"{fmt(sb['within_50ms'], True)} | {secs / max(t, 1e-9):.1f}x | "
                    f"{secs / max(tc, 1e-9):.1f}x |")
    print(f"held-out voices: {', '.join(v.name for v in HELDOUT_VOICES)}; {len(jobs)} clips, "
          f"{sum(seconds.values()):.0f} s of audio; aligner: {aligner.name}")
    print("| engine | word bounds | word median ms | word <=20 ms | word <=50 ms | phone bounds | "
          "phone median ms | phone <=20 ms | phone <=50 ms | word-start median ms: baseline / aligner | "
          "baseline word starts <=50 ms | aligner speed (audio s / wall s, 1 thread) | "
          "aligner speed (audio s / CPU s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    compared = sum(v.phone_words_compared for v in ours.values())
    total = sum(v.phone_words_total for v in ours.values())
    print(f"phone boundaries compared on {compared}/{total} words whose G2P phones equal the engine's")
    if failures:
        print(f"{len(failures)} clips not aligned:")
        print("\n".join("  " + f for f in failures))
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "failures": failures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
