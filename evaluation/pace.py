"""Speaking pace of generated audio against the prompt speaker's own reading rate.

A voice-cloning system should read a new sentence at about the pace its prompt speaker reads: an utterance
that stops early (words dropped) or runs on (babble, a missed stop) shows up as a pace far from 1.
`pace_ratio` = (generated speech seconds per phone) / (prompt speech seconds per phone), where speech seconds
run from the first to the last frame within 40 dB of the clip's loudest 20 ms frame (leading and trailing
silence do not count) and phones come from flite's CMU lexicon G2P, the same one that labels the corpus
(pauses not counted). 1.0 = the prompt's pace; the issue's bar is within +-30 %.
"""

from __future__ import annotations

import math

import numpy as np

from data_pipeline.alignment.g2p import transcript_phones

FRAME_SECONDS = 0.02
SILENCE_DB = 40.0
PACE_TOLERANCE = 0.3


def speech_seconds(wav: np.ndarray, sample_rate: int) -> float:
    """Seconds from the first to the last 20 ms frame within SILENCE_DB of the loudest frame (0 if silent)."""
    hop = max(1, int(round(FRAME_SECONDS * sample_rate)))
    frames = len(wav) // hop
    if frames == 0:
        return 0.0
    energy = np.square(np.asarray(wav[: frames * hop], dtype=np.float64)).reshape(frames, hop).mean(axis=1)
    peak = float(energy.max())
    if peak <= 1e-12:  # digital silence: nothing was said
        return 0.0
    loud = np.flatnonzero(energy >= peak * 10.0 ** (-SILENCE_DB / 10.0))
    return float(loud[-1] - loud[0] + 1) * hop / sample_rate


def phone_count(text: str) -> int:
    """Spoken phones of `text` (no pauses); raises G2PError for a text with nothing to say."""
    return sum(len(word.phones) for word in transcript_phones(text))


def pace_ratio(wav: np.ndarray, sample_rate: int, text: str, prompt_wav: np.ndarray, prompt_rate: int,
               prompt_text: str) -> float:
    """(seconds per phone of `wav` reading `text`) / (seconds per phone of the prompt reading `prompt_text`);
    NaN when either clip is silent."""
    prompt_spp = speech_seconds(prompt_wav, prompt_rate) / phone_count(prompt_text)
    spp = speech_seconds(wav, sample_rate) / phone_count(text)
    if prompt_spp <= 0.0:
        return math.nan
    return spp / prompt_spp


def within_tolerance(ratio: float, tolerance: float = PACE_TOLERANCE) -> bool:
    return math.isfinite(ratio) and abs(ratio - 1.0) <= tolerance
