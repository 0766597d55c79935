"""How the Synthesizer's rows (one per sentence piece and reading, `_Row`) are grouped into AR batches, and
how the pieces' audio is joined back into one utterance."""

from __future__ import annotations

import logging

import numpy as np

from lm.inference.synthesis_types import _Row

log = logging.getLogger(__name__)


def plan_batches(rows: list[_Row], rows_per_batch: int | None) -> list[list[_Row]]:
    """Group rows that can share one AR call: same max_seconds (one cap per call), similar text lengths (rows
    of a batch run until the longest stops), at most `batch_size` rows. rows_per_batch=1: piece by piece (the
    first audio comes soonest), the readings of one piece (best of N) together."""
    if rows_per_batch == 1:
        pieces: dict[tuple[int, int], list[_Row]] = {}
        for r in rows:
            pieces.setdefault((r.request, r.piece), []).append(r)
        return list(pieces.values())
    groups: dict[float, list[_Row]] = {}
    for r in rows:
        groups.setdefault(r.decode.max_seconds, []).append(r)
    batches = []
    for group in groups.values():
        group.sort(key=lambda r: r.text_ids.numel())  # stable: a piece's readings stay side by side
        size = rows_per_batch or group[0].decode.batch_size
        batches += [group[i:i + size] for i in range(0, len(group), size)]
    return batches


def join_pieces(pieces: list[np.ndarray | None], pause_seconds: float, sample_rate: int) -> np.ndarray:
    """The pieces' audio with `pause_seconds` of silence between them, clipped to [-1, 1]."""
    gap = np.zeros(int(round(pause_seconds * sample_rate)), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, wav in enumerate(pieces):
        if wav is None:
            raise RuntimeError(f"sentence piece {i} was never generated")  # a bug in batching, not input
        parts += [gap, wav] if i else [wav]
    out = np.concatenate(parts).astype(np.float32)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1.0:  # the codec can overshoot; keep the WAV valid without changing the level of the rest
        log.debug("clipping codec output peak %.2f to 1.0", peak)
        out = np.clip(out, -1.0, 1.0)
    return out
