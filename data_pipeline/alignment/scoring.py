"""Boundary errors of an alignment against exact synthesiser timings (what scripts/bench_align.py prints).

Word boundaries: every word's start and end, except at words the engine merged into a neighbour ("for a"
spoken as one espeak word). Phone boundaries: the starts of a word's phones and its end, for words whose
canonical phones are the same in both alignments, skipping starts the truth only estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_pipeline.alignment.phones import PAUSE
from data_pipeline.alignment.schema import Alignment


@dataclass
class BoundaryErrors:
    words: list[float] = field(default_factory=list)  # |error| in seconds
    phones: list[float] = field(default_factory=list)
    phone_words_compared: int = 0
    phone_words_total: int = 0

    def extend(self, other: BoundaryErrors) -> None:
        self.words += other.words
        self.phones += other.phones
        self.phone_words_compared += other.phone_words_compared
        self.phone_words_total += other.phone_words_total


def summary(errors: list[float]) -> dict:
    """median (ms) and share within 20 / 50 ms."""
    if not errors:
        return {"n": 0, "median_ms": float("nan"), "within_20ms": float("nan"), "within_50ms": float("nan")}
    e = np.asarray(errors)
    return {"n": len(e), "median_ms": float(np.median(e) * 1000), "within_20ms": float((e <= 0.020).mean()),
            "within_50ms": float((e <= 0.050).mean())}


def boundary_errors(truth: Alignment, hyp: Alignment) -> BoundaryErrors:
    if len(truth.words) != len(hyp.words):
        raise ValueError(f"{len(truth.words)} words in the truth, {len(hyp.words)} in the alignment")
    merged = set(truth.extra.get("merged_words", []))
    out = BoundaryErrors()
    for i, (t, h) in enumerate(zip(truth.words, hyp.words, strict=True)):
        if i in merged:
            continue
        if i - 1 not in merged:
            out.words.append(abs(t.start - h.start))
        if i + 1 not in merged:
            out.words.append(abs(t.end - h.end))
        t_ph = [p for p in truth.phones if p.word_index == i and p.phone != PAUSE]
        h_ph = [p for p in hyp.phones if p.word_index == i and p.phone != PAUSE]
        out.phone_words_total += 1
        if [p.phone for p in t_ph] != [p.phone for p in h_ph]:
            continue
        out.phone_words_compared += 1
        out.phones += [abs(a.start - b.start) for a, b in zip(t_ph, h_ph, strict=True) if a.exact]
        out.phones.append(abs(t_ph[-1].end - h_ph[-1].end))
    return out
