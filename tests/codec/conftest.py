"""Shared fixtures for the codec tests: real speech clips and session-wide random codecs (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codec import load_audio, load_codec
from codec.backends.encodec_codec import EncodecCodec, EncodecConfig

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"
SHORT_LJ = SPEECH / "ljspeech-sample" / "LJ001-0002.wav"  # 1.9 s, 22.05 kHz
SHORT_LJ_2 = SPEECH / "ljspeech-sample" / "LJ001-0008.wav"  # 1.8 s, 22.05 kHz
ARCTIC = SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0001.wav"  # 16 kHz


def tiny_config(causal: bool = True) -> EncodecConfig:
    """A 67k-parameter EnCodec-family model without LSTM: a short, known receptive field (< 9 frames)."""
    return EncodecConfig(name="tiny", sample_rate=16_000, causal=causal, n_filters=4, ratios=[4, 4, 4, 2],
                         dimension=16, lstm_layers=0, codebook_size=64, max_codebooks=4, num_codebooks=4,
                         target_bandwidths=[])


@pytest.fixture(scope="session")
def clips() -> dict[str, Path]:
    """Real speech files: `lj` (1.9 s, 22.05 kHz), `lj2` (1.8 s, 22.05 kHz), `arctic` (16 kHz)."""
    return {"lj": SHORT_LJ, "lj2": SHORT_LJ_2, "arctic": ARCTIC}


@pytest.fixture(scope="session")
def codec24() -> EncodecCodec:
    """The full-size 24 kHz EnCodec architecture, seeded random weights, 6 kbps (8 codebooks)."""
    return load_codec("encodec_24khz:random")


@pytest.fixture(scope="session")
def make_tiny_config():
    return tiny_config


@pytest.fixture(scope="session")
def tiny_codec() -> EncodecCodec:
    return EncodecCodec.random(tiny_config(), seed=0)


@pytest.fixture(scope="session")
def lj_clip() -> tuple[torch.Tensor, int]:
    return load_audio(SHORT_LJ)


@pytest.fixture(scope="session")
def lj_clip_2() -> tuple[torch.Tensor, int]:
    return load_audio(SHORT_LJ_2)
