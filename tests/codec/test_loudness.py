"""Active speech level (codec/loudness.py) on signals whose level is known, and on a real recording."""

import math

import pytest
import torch

from codec.audio import load_audio, to_mono
from codec.loudness import active_level_db, scale_to_level
from tests.codec.conftest import SHORT_LJ

SR = 16000


def _sine(seconds: float, amplitude: float, hz: float = 220.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return amplitude * torch.sin(2 * math.pi * hz * t)


def test_full_scale_sine_reads_minus_3_db():
    assert active_level_db(_sine(1.0, 1.0), SR) == pytest.approx(-3.01, abs=0.05)
    assert active_level_db(_sine(1.0, 0.1), SR) == pytest.approx(-23.01, abs=0.05)


def test_pauses_and_a_faint_noise_floor_do_not_lower_the_level():
    tone = _sine(1.0, 0.25)
    gen = torch.Generator().manual_seed(0)
    floor = 1e-3 * torch.randn(SR, generator=gen)  # -60 dB: room noise in the pause
    with_pause = torch.cat([tone, floor, tone])
    assert active_level_db(with_pause, SR) == pytest.approx(active_level_db(tone, SR), abs=0.1)
    # a plain RMS over the clip would have dropped by 10*log10(3/2) = 1.8 dB
    rms_db = 10 * math.log10(float(with_pause.pow(2).mean()))
    assert rms_db < active_level_db(tone, SR) - 1.5


def test_silence_has_no_level_and_is_left_alone():
    silent = torch.zeros(SR)
    assert active_level_db(silent, SR) == -math.inf
    out, gain = scale_to_level(silent, SR, -20.0)
    assert gain == 0.0 and torch.equal(out, silent)


def test_scale_to_level_reaches_the_target_on_real_speech():
    wav, sr = load_audio(SHORT_LJ)
    wav = to_mono(wav)[0]
    before = active_level_db(wav, sr)
    out, gain = scale_to_level(wav, sr, before - 6.0)
    assert gain == pytest.approx(-6.0, abs=1e-6)
    assert active_level_db(out, sr) == pytest.approx(before - 6.0, abs=0.01)


def test_gain_stops_short_of_clipping():
    quiet_peaky = torch.cat([_sine(0.5, 0.05), _sine(0.02, 0.5)])  # a click far above the speech
    out, gain = scale_to_level(quiet_peaky, SR, -3.0)
    assert float(out.abs().max()) == pytest.approx(0.99, abs=1e-4)
    assert gain == pytest.approx(20 * math.log10(0.99 / 0.5), abs=1e-4)
