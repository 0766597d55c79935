"""Codec.encode_long: long audio in overlapping windows, stitched into one code stream."""

from __future__ import annotations

import pytest
import torch

from codec import resample
from codec.backends.encodec_codec import EncodecCodec


@pytest.fixture(scope="module")
def long_speech(lj_clip, lj_clip_2) -> torch.Tensor:
    """3.7 s of real speech at 16 kHz (two clips back to back), [1, T]."""
    (a, sr), (b, _) = lj_clip, lj_clip_2
    return resample(torch.cat([a, b], dim=-1), sr, 16_000)


@pytest.mark.parametrize("causal", [True, False])
def test_chunk_interiors_match_unchunked(causal, make_tiny_config, long_speech) -> None:
    """No LSTM: a frame sees < 9 frames of context (causal: past only), less than half the overlap
    (0.2 s = 25 frames -> 12 / 13 each side), so stitched codes equal the one-shot codes, up to float
    rounding between differently shaped convolutions (a rare near-tie flip)."""
    codec = EncodecCodec.random(make_tiny_config(causal), seed=1)
    whole = codec.encode(long_speech[None]).codes[0]
    stitched = codec.encode_long(long_speech, chunk_seconds=0.5, overlap_seconds=0.2, chunks_per_batch=3)
    assert stitched.shape == whole.shape == (4, codec.num_frames(long_speech.shape[-1]))
    agree = (stitched == whole).all(dim=0).float().mean()
    assert agree >= 0.995, f"only {agree:.3f} of frames agree"
    # Without overlap the window edges lose their context and the codes there change: the overlap is
    # what makes the interiors right.
    no_overlap = codec.encode_long(long_speech, chunk_seconds=0.5, overlap_seconds=0.0, chunks_per_batch=3)
    assert no_overlap.shape == whole.shape
    assert not torch.equal(no_overlap, whole)


def test_short_input_and_any_rate_or_channels(tiny_codec, long_speech) -> None:
    short = long_speech[:, :8000]
    assert torch.equal(tiny_codec.encode_long(short, chunk_seconds=1.0, overlap_seconds=0.2),
                       tiny_codec.encode(short[None]).codes[0])
    stereo_44k = resample(long_speech, 16_000, 44_100).repeat(2, 1)
    stitched = tiny_codec.encode_long(stereo_44k, sample_rate=44_100, chunk_seconds=0.5, overlap_seconds=0.2)
    assert stitched.shape[-1] == tiny_codec.num_frames(long_speech.shape[-1])


def test_full_encodec_with_lstm_frame_count_and_agreement(codec24, lj_clip) -> None:
    """The 24 kHz model ends in a 2-layer LSTM over the whole clip, so chunking is not exact; the frame
    count is, and most codes agree once the LSTM has 0.2 s of real context."""
    wav, sr = lj_clip
    x = resample(wav, sr, 24_000)[:, : 36_000]  # 1.5 s
    whole = codec24.encode(x[None]).codes[0]
    stitched = codec24.encode_long(x, chunk_seconds=0.8, overlap_seconds=0.4, chunks_per_batch=4)
    assert stitched.shape == whole.shape == (8, 113)
    assert (stitched[0] == whole[0]).float().mean() >= 0.9


def test_bad_window_settings(tiny_codec, long_speech) -> None:
    with pytest.raises(ValueError, match="overlap"):
        tiny_codec.encode_long(long_speech, chunk_seconds=0.5, overlap_seconds=0.5)
    with pytest.raises(ValueError, match="one clip"):
        tiny_codec.encode_long(long_speech[None])
