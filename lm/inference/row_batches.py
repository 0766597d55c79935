"""How the Synthesizer's rows (one per sentence piece and reading, `_Row`) are grouped into AR batches, which
of them are heard, and how the pieces' audio is joined back into one utterance."""

from __future__ import annotations

import logging

import numpy as np

from lm.inference.rerank import competing_readings
from lm.inference.synthesis_types import DecodeConfig, _Row

log = logging.getLogger(__name__)


def plan_batches(rows: list[_Row], rows_per_batch: int | None) -> list[list[_Row]]:
    """Group rows that can share one AR call: same max_seconds (one cap per call), similar text lengths (rows
    of a batch run until the longest stops), at most `batch_size` rows, and the readings of one piece (best of
    N) always together (a piece with more readings than `batch_size` makes a batch of its own).
    rows_per_batch=1: piece by piece (the first audio comes soonest)."""
    if rows_per_batch == 1:
        return [[rows[i] for i in piece] for piece in by_piece(rows)]
    groups: dict[float, list[_Row]] = {}
    for r in rows:
        groups.setdefault(r.decode.max_seconds, []).append(r)
    batches: list[list[_Row]] = []
    for group in groups.values():
        group.sort(key=lambda r: r.text_ids.numel())  # stable: a piece's readings stay side by side
        size = rows_per_batch or group[0].decode.batch_size
        batch: list[_Row] = []
        for piece in by_piece(group):  # whole pieces only: best of N compares a piece's readings in one batch
            if batch and len(batch) + len(piece) > size:
                batches.append(batch)
                batch = []
            batch += [group[i] for i in piece]
        batches += [batch] if batch else []
    return batches


def by_piece(rows: list[_Row]) -> list[list[int]]:
    """Indices of `rows` grouped by sentence piece (its readings), pieces in order of first appearance."""
    pieces: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(rows):
        pieces.setdefault((r.request, r.piece), []).append(i)
    return list(pieces.values())


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


def draws(cfg: DecodeConfig) -> int:
    """Readings drawn of every piece: `candidates`, but one when decoding is greedy (all would be equal)."""
    return cfg.candidates if cfg.temperature > 0 else 1


def readings_to_hear(batch: list[_Row], paces: list[float | None]) -> list[int]:
    """The rows of an AR batch whose audio is made (NAR, codec): all, but of a piece's best-of-N readings only
    those that compete at the prompt speaker's pace (`competing_readings`; `paces` per row). The rest are
    ruled out by their pace alone, so nobody needs to hear them."""
    heard = []
    for rows in by_piece(batch):
        first = batch[rows[0]]
        if len(rows) == draws(first.decode) > 1:  # the piece's readings are all here (plan_batches)
            chosen = competing_readings(len(rows), [paces[b] for b in rows], first.target_pace,
                                        first.decode.pace_tolerance)
            rows = [rows[i] for i in chosen]
        heard += rows
    return sorted(heard)
