"""Forced Viterbi: the best monotonic path, optional pauses, and no path when the phones cannot fit."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.alignment.phones import PAUSE_ID, PHONE_ID
from data_pipeline.alignment.viterbi import build_states, forced_align

A, B, C = PHONE_ID["aa"], PHONE_ID["b"], PHONE_ID["k"]


def _log_probs(frame_phones: list[int], sharp: float = 0.9) -> np.ndarray:
    """Frames that each clearly say one phone."""
    n = len(PHONE_ID)
    lp = np.full((len(frame_phones), n), np.log((1 - sharp) / (n - 1)))
    lp[np.arange(len(frame_phones)), frame_phones] = np.log(sharp)
    return lp


def test_states_put_optional_pauses_around_words() -> None:
    phones, words, optional = build_states([[A, B], [C]])
    assert list(phones) == [PAUSE_ID, A, B, PAUSE_ID, C, PAUSE_ID]
    assert list(words) == [-1, 0, 0, -1, 1, -1]
    assert list(optional) == [True, False, False, True, False, True]


def test_path_follows_the_frames() -> None:
    frames = [PAUSE_ID] * 3 + [A] * 4 + [B] * 2 + [PAUSE_ID] * 2 + [C] * 5 + [PAUSE_ID] * 1
    path = forced_align(_log_probs(frames), [[A, B], [C]])
    assert [int(path.state_phone[s]) for s in path.states] == frames


def test_pauses_are_skipped_when_not_heard() -> None:
    frames = [A] * 4 + [B] * 2 + [C] * 5
    path = forced_align(_log_probs(frames), [[A, B], [C]])
    assert [int(path.state_phone[s]) for s in path.states] == frames
    assert PAUSE_ID not in {int(path.state_phone[s]) for s in path.states}


def test_every_phone_gets_a_frame_even_against_the_evidence() -> None:
    frames = [A] * 6  # B and C are never heard: the path must still give each one frame
    path = forced_align(_log_probs(frames), [[A, B], [C]])
    phones = [int(path.state_phone[s]) for s in path.states]
    assert phones.count(B) >= 1 and phones.count(C) >= 1 and phones[0] == A
    assert np.all(np.diff(path.states) >= 0)


def test_too_few_frames_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 phones cannot fit in 2 frames"):
        forced_align(_log_probs([A, B]), [[A, B], [C]])
    with pytest.raises(ValueError, match="no phones"):
        forced_align(_log_probs([A, B]), [])
