"""Best of N: draw several readings of a sentence piece and keep one at its speaker's pace that a phone
recogniser hears closest to its text (`DecodeConfig.candidates`).

A small codec LM's readings of one sentence differ from draw to draw in pace and in what they say. A
phone-aligned model knows which phone every frame was made for, so a reading's pace (seconds per phone
over its spoken span, lm/inference/phone_alignment.py `reading_pace`) is known without listening. With the
prompt speaker's pace known (continuation mode: the aligned prompt) only the readings near it compete
(DecodeConfig.pace_tolerance, +-25 % by default). Among those, hama's phoneme recogniser
(data_pipeline/alignment/phone_recognizer.py: trained on real speech, neither on this model's output nor on
the Whisper model evaluation uses) hears how far each is from the piece's own phones (flite's lexicon, as the
model reads them), and with `DecodeConfig.judge` "phones+words" Whisper base (lm/inference/word_judge.py)
how far from its words; the reading with the fewest errors (the two rates added) is kept. Measured: README,
"Round 11" (phones) and "Round 13" (phones and words).
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np

from data_pipeline.alignment.phone_recognizer import recognise_phones
from lm.inference.phone_alignment import text_phones
from lm.inference.synthesis_types import Reading, _Row
from lm.inference.word_judge import WordJudge

log = logging.getLogger(__name__)

# a reading this far from its speaker's pace (either way) does not compete while one closer does
# (DecodeConfig.pace_tolerance)
PACE_TOLERANCE = 0.25


def word_shortlist(heard: int) -> int:
    """How many readings the word judge hears of `heard`: those with the fewest phone errors, half of them and
    at least two. On 320 scored readings (README "Round 13") best of 4 kept readings as good as hearing every
    one, and best of 8 nearly (27.2 against 26.2 %), at half the cost."""
    return min(heard, max(2, math.ceil(heard / 2)))


def edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance between two phone sequences (substitution, insertion, deletion cost 1)."""
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(b) + 1):
            above = row[j]
            row[j] = min(above + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1]))
            diagonal = above
    return row[-1]


def phone_error_rate(wav: np.ndarray, sample_rate: int, text: str) -> float:
    """(phone edits from what hama hears in `wav` to the phones of `text`) / (phones of `text`); 0 is a
    perfect reading, 1 or more says little of it. NaN when `text` has no phones to compare with."""
    target = text_phones(text)
    if not target:
        return float("nan")
    return edit_distance(recognise_phones(wav, sample_rate), target) / len(target)


def word_error_rate(wav: np.ndarray, sample_rate: int, text: str, judge: WordJudge) -> float:
    """(word edits from what `judge` hears in `wav` to the words of `text`) / (words of `text`), capped at 1
    so that one babbled reading weighs no more than a silent one. NaN when `text` has no words."""
    target = judge.text_words(text)
    if not target:
        return float("nan")
    return min(1.0, edit_distance(judge.heard_words(wav, sample_rate), target) / len(target))


class Judged(NamedTuple):
    """What best of N decided about a piece's readings. NaN for a reading not heard (ruled out by its pace),
    and for every word error rate when no word judge is used."""

    keep: int
    phone_errors: list[float]
    word_errors: list[float]


def best_reading(wavs: list[np.ndarray | None], sample_rate: int, text: str,
                 paces: list[float | None] | None = None, target_pace: float | None = None,
                 tolerance: float = PACE_TOLERANCE, word_judge: WordJudge | None = None,
                 shortlist: int | None = None) -> Judged:
    """The reading to keep, and what the judges heard in each.

    With the prompt speaker's pace (`target_pace`, seconds per phone) and each reading's (`paces`), only the
    readings `competing_readings` names compete: a reading should end where its text ends at its speaker's
    pace. Among those the fewest phone errors win; with a `word_judge` (DecodeConfig.judge "phones+words")
    it hears the `shortlist` readings with the fewest phone errors (None: `word_shortlist`) and the lowest
    phone + word error rate among them wins. Ties (and a text with no phones, where nothing can be compared)
    keep the earliest. A reading that does not compete is not heard (NaN), and may be None: the Synthesizer
    does not decode the audio of readings the pace already ruled out."""
    competing = set(competing_readings(len(wavs), paces, target_pace, tolerance))
    heard = [i in competing and w is not None for i, w in enumerate(wavs)]
    phones = [phone_error_rate(w, sample_rate, text) if h else math.nan
              for w, h in zip(wavs, heard, strict=True)]
    if word_judge is None:
        return Judged(keep_reading(phones, paces, target_pace, tolerance), phones, [math.nan] * len(wavs))
    ranked = sorted((i for i, h in enumerate(heard) if h),
                    key=lambda i: (phones[i] if math.isfinite(phones[i]) else math.inf, i))
    listed = set(ranked[:max(1, shortlist if shortlist is not None else word_shortlist(len(ranked)))])
    words = [word_error_rate(w, sample_rate, text, word_judge) if i in listed else math.nan
             for i, w in enumerate(wavs)]
    # a reading off the shortlist cannot win: its score is unknown (NaN loses in keep_reading)
    scores = [phones[i] + (words[i] if math.isfinite(words[i]) else 0.0) if i in listed else math.nan
              for i in range(len(wavs))]
    return Judged(keep_reading(scores, paces, target_pace, tolerance), phones, words)


def competing_readings(count: int, paces: list[float | None] | None = None, target_pace: float | None = None,
                       tolerance: float = PACE_TOLERANCE) -> list[int]:
    """Which of `count` readings compete on phone errors: those within +-`tolerance` of the speaker's pace,
    or the one closest to it when none is; all of them when that pace is unknown or `tolerance` is 0."""
    if not target_pace or paces is None or tolerance <= 0:
        return list(range(count))
    off = [abs(math.log(p / target_pace)) if p else math.inf for p in paces]
    inside = [i for i in range(count) if off[i] <= math.log1p(tolerance)]
    return inside or [min(range(count), key=lambda i: (off[i], i))]


def keep_reading(errors: list[float], paces: list[float | None] | None = None,
                 target_pace: float | None = None, tolerance: float = PACE_TOLERANCE) -> int:
    """The choice `best_reading` makes, from the readings' scores (lower is better) and paces."""
    competing = competing_readings(len(errors), paces, target_pace, tolerance)
    return min(competing, key=lambda i: (errors[i] if math.isfinite(errors[i]) else math.inf, i))


def keep_best_reading(readings: list[Reading], row: _Row, sample_rate: int,
                      word_judge: WordJudge | None = None) -> tuple[int, float]:
    """The readings of `row`'s piece -> (the one to keep, its phone error rate; NaN for a lone reading),
    logged with every reading's error rates ("-": ruled out by its pace, not heard) and pace."""
    if len(readings) == 1:
        return 0, math.nan
    text, target_pace = row.text, row.target_pace
    paces = [r.pace for r in readings]
    judged = best_reading([r.wav for r in readings], sample_rate, text, paces, target_pace,
                          row.decode.pace_tolerance, word_judge)
    shown = ", ".join(f"{e:.2f}" if math.isfinite(e) else "-" for e in judged.phone_errors)
    words = "" if word_judge is None else "; word error rates " + ", ".join(
        f"{e:.2f}" if math.isfinite(e) else "-" for e in judged.word_errors)
    log.info("best of %d for %r: kept reading %d (phone error rates %s%s; pace %s against the prompt's)",
             len(readings), text[:40], judged.keep, shown, words,
             ", ".join(f"{p / target_pace:.2f}" if p and target_pace else "?" for p in paces))
    return judged.keep, judged.phone_errors[judged.keep]
