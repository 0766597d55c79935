"""Forced alignment: the best monotonic path of a phone sequence through per-frame log-probabilities.

States are the transcript's phones in order, with an optional pause before the first word, between any
two words and after the last. Every phone holds at least one frame; a pause may be skipped. Pure numpy,
one vectorised step per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline.alignment.phones import PAUSE_ID

NEG = -1e30


@dataclass
class ForcedPath:
    states: np.ndarray  # [F] index into the state list, non-decreasing
    state_phone: np.ndarray  # [S] phone id per state
    state_word: np.ndarray  # [S] word index per state, -1 for pauses
    log_likelihood: float  # sum over frames of the path's log-probabilities


def build_states(word_phone_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (phone id per state, word index per state, skippable per state)."""
    phones, words, optional = [PAUSE_ID], [-1], [True]
    for w, ids in enumerate(word_phone_ids):
        phones += ids
        words += [w] * len(ids)
        optional += [False] * len(ids)
        phones.append(PAUSE_ID)
        words.append(-1)
        optional.append(True)
    return np.array(phones), np.array(words), np.array(optional)


def forced_align(log_probs: np.ndarray, word_phone_ids: list[list[int]]) -> ForcedPath:
    """log_probs [F, P] -> the most likely path. Raises ValueError when no path fits (too few frames)."""
    phones, words, optional = build_states(word_phone_ids)
    frames, states = log_probs.shape[0], len(phones)
    needed = int((~optional).sum())
    if needed == 0:
        raise ValueError("nothing to align: the transcript has no phones")
    if frames < needed:
        raise ValueError(f"{needed} phones cannot fit in {frames} frames")
    emit = log_probs[:, phones]  # [F, S]
    score = np.full(states, NEG)
    score[0] = emit[0, 0]
    score[1] = emit[0, 1]
    back = np.zeros((frames, states), dtype=np.int32)  # 0 stay, 1 from s-1, 2 from s-2 (skip a pause)
    skip_ok = np.zeros(states, dtype=bool)
    skip_ok[2:] = optional[1:-1]  # entering s from s-2 jumps over an optional state s-1
    for t in range(1, frames):
        stay = score
        step = np.concatenate([[NEG], score[:-1]])
        jump = np.where(skip_ok, np.concatenate([[NEG, NEG], score[:-2]]), NEG)
        best = np.argmax(np.stack([stay, step, jump]), axis=0)
        score = np.choose(best, [stay, step, jump]) + emit[t]
        back[t] = best
    end = states - 1 if score[states - 1] >= score[states - 2] else states - 2
    if score[end] <= NEG / 2:
        raise ValueError(f"{needed} phones cannot fit in {frames} frames")
    path = np.empty(frames, dtype=np.int64)
    s = end
    total = float(score[end])
    for t in range(frames - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    if path[0] > 1:
        raise ValueError("no path starts at the first phone")
    return ForcedPath(path, phones, words, total)
