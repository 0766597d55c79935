"""codec.audio: reading files, down-mix, resampling, batch padding."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.audio import AudioReadError, load_audio, pad_batch, resample, resampled_length, to_mono


def test_load_audio_real_clip_shape_and_rate(clips) -> None:
    wav, sr = load_audio(clips["lj"])
    assert sr == 22_050
    assert wav.dtype == torch.float32 and wav.dim() == 2 and wav.shape[0] == 1
    assert abs(wav.shape[1] / sr - 1.9) < 0.01  # MANIFEST.tsv: 1.9 s
    assert 0.01 < wav.abs().max() <= 1.0


def test_load_audio_from_bytes_equals_from_path(clips) -> None:
    from_path, sr1 = load_audio(clips["arctic"])
    from_bytes, sr2 = load_audio(clips["arctic"].read_bytes(), name="arctic-in-shard")
    assert sr1 == sr2 == 16_000
    assert torch.equal(from_path, from_bytes)


def test_load_audio_stereo_keeps_channels(tmp_path) -> None:
    stereo = np.stack([np.linspace(-0.5, 0.5, 800), np.zeros(800)], axis=1).astype(np.float32)
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, 8000)
    wav, sr = load_audio(path)
    assert sr == 8000 and wav.shape == (2, 800)
    assert torch.allclose(wav[0], torch.from_numpy(stereo[:, 0]), atol=1e-4)  # flac is 16-bit
    assert torch.all(wav[1] == 0)


def test_corrupt_file_error_names_file_and_reason(tmp_path) -> None:
    bad = tmp_path / "corrupt_clip.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all")
    with pytest.raises(AudioReadError) as info:
        load_audio(bad)
    assert info.value.source == str(bad)
    assert str(bad) in str(info.value) and info.value.reason


def test_missing_file_and_bad_bytes_errors(tmp_path) -> None:
    missing = tmp_path / "nope.flac"
    with pytest.raises(AudioReadError, match="no such file") as info:
        load_audio(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(AudioReadError, match="shard-00001/key7"):
        load_audio(b"\x00garbage", name="shard-00001/key7")


def test_to_mono_averages_channels() -> None:
    wav = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    assert torch.equal(to_mono(wav), torch.tensor([[0.5, 0.0, 0.0]]))
    batch = torch.stack([wav, 2 * wav])
    assert to_mono(batch).shape == (2, 1, 3)
    assert torch.equal(to_mono(wav[:1]), wav[:1])


def test_resample_length_and_pitch() -> None:
    sr_in, sr_out, freq = 22_050, 24_000, 440.0
    t = torch.arange(sr_in) / sr_in  # 1 s
    tone = torch.sin(2 * torch.pi * freq * t)[None]
    out = resample(tone, sr_in, sr_out)
    assert out.shape == (1, sr_out)
    spectrum = torch.fft.rfft(out[0]).abs()
    assert abs(int(spectrum.argmax()) - freq) <= 1  # 1 Hz bins over 1 s
    assert resampled_length(12345, 22_050, 24_000) == -(-12345 * 24_000 // 22_050)
    assert torch.equal(resampled_length(torch.tensor([0, 1, 22_050]), 22_050, 24_000),
                       torch.tensor([0, 2, 24_000]))


def test_resample_of_padded_batch_equals_per_item() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 5000, generator=g), torch.randn(1, 3210, generator=g)
    batch, lengths = pad_batch([a, b])
    out = resample(batch, 16_000, 24_000)
    out_lengths = resampled_length(lengths, 16_000, 24_000)
    for item, n, row in zip((a, b), out_lengths.tolist(), out, strict=True):
        single = resample(item, 16_000, 24_000)
        assert single.shape[-1] == n
        torch.testing.assert_close(row[:, :n], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("sr_in", "sr_out"), [(22_050, 16_000), (16_000, 24_000), (44_100, 24_000)])
def test_resample_with_the_cached_kernel_is_torchaudios_bit_for_bit(sr_in: int, sr_out: int) -> None:
    """resample() builds torchaudio's kernel once per rate pair: the output must stay exactly
    torchaudio.functional.resample's (token corpora made before the cache stay reproducible)."""
    import torchaudio.functional as AF

    g = torch.Generator().manual_seed(1)
    for wav in (torch.randn(1, 9_999, generator=g), torch.randn(2, 1, 4_000, generator=g)):
        for _ in range(2):  # the second call uses the cached kernel
            ours, theirs = resample(wav, sr_in, sr_out), AF.resample(wav, sr_in, sr_out)
            n = resampled_length(wav.shape[-1], sr_in, sr_out)
            assert ours.shape[-1] == n and torch.equal(ours, theirs[..., :n])


def test_pad_batch() -> None:
    wav, lengths = pad_batch([torch.ones(1, 3), torch.ones(5) * 2])
    assert wav.shape == (2, 1, 5) and lengths.tolist() == [3, 5]
    assert torch.equal(wav[0, 0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="to_mono"):
        pad_batch([torch.ones(1, 3), torch.ones(2, 3)])
