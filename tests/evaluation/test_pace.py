"""The pace metric on real speech: a clip read against itself is 1.0, silence around it does not count, a
faster or slower playback moves the ratio by exactly the speed factor, and a different speaker reading at
their own pace lands near 1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.audio import load_audio
from evaluation.pace import pace_ratio, phone_count, speech_seconds, within_tolerance


def _lj(speech_dir, name: str) -> tuple[np.ndarray, int, str]:
    rows = dict(line.split("\t")[::2] for line in
                (speech_dir / "ljspeech-sample" / "transcripts.tsv").read_text().splitlines()[1:])
    wav, rate = load_audio(speech_dir / "ljspeech-sample" / name)
    return wav, rate, rows[name].strip()


def test_a_clip_against_itself_is_one_and_padding_with_silence_changes_nothing(speech_dir) -> None:
    wav, rate, text = _lj(speech_dir, "LJ001-0001.wav")
    assert pace_ratio(wav, rate, text, wav, rate, text) == pytest.approx(1.0)
    padded = np.concatenate([np.zeros(rate), wav, np.zeros(2 * rate)]).astype(np.float32)
    assert speech_seconds(padded, rate) == pytest.approx(speech_seconds(wav, rate), abs=0.02)
    assert pace_ratio(padded, rate, text, wav, rate, text) == pytest.approx(1.0, abs=0.01)


def test_playing_faster_or_slower_moves_the_ratio_by_the_speed_factor(speech_dir) -> None:
    wav, rate, text = _lj(speech_dir, "LJ001-0001.wav")
    # The same samples declared at 1.5x the rate play 1.5x faster: 1/1.5 of the seconds per phone.
    assert pace_ratio(wav, int(rate * 1.5), text, wav, rate, text) == pytest.approx(1 / 1.5, rel=0.01)
    assert pace_ratio(wav, int(rate / 1.5), text, wav, rate, text) == pytest.approx(1.5, rel=0.01)
    assert not within_tolerance(1.5) and within_tolerance(0.8) and not within_tolerance(math.nan)


def test_one_speaker_reading_two_sentences_keeps_a_similar_pace(speech_dir) -> None:
    a = _lj(speech_dir, "LJ001-0001.wav")
    b = _lj(speech_dir, "LJ001-0003.wav")
    assert phone_count(b[2]) > 20
    assert within_tolerance(pace_ratio(*b, *a))


def test_silence_is_pace_zero_and_a_silent_prompt_has_no_pace(speech_dir) -> None:
    wav, rate, text = _lj(speech_dir, "LJ001-0002.wav")
    silent = np.zeros(rate, dtype=np.float32)
    assert speech_seconds(silent, rate) == 0.0
    assert pace_ratio(silent, rate, text, wav, rate, text) == 0.0  # generated nothing: far outside +-30 %
    assert math.isnan(pace_ratio(wav, rate, text, silent, rate, text))
