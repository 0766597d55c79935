"""Audio at the edge: read a file, down-mix to mono, resample, pad a batch.

Shape letters: B batch, C channels, T samples.
Everything here is float32 in [-1, 1]; codecs never see anything but mono audio at their own rate.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torchaudio.functional import functional as _AF_IMPL


class AudioReadError(RuntimeError):
    """An audio file (or in-memory blob) that cannot be decoded. `source` names it, `reason` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot read audio {source!r}: {reason}")
        self.source = source
        self.reason = reason


AudioSource = str | Path | bytes | BinaryIO


def load_audio(source: AudioSource, name: str | None = None) -> tuple[torch.Tensor, int]:
    """Read audio with soundfile -> (wav [C, T] float32, sample_rate).

    `source` is a path, raw encoded bytes (e.g. a flac member of a shard) or a binary file object;
    `name` is what error messages call it (defaults to the path). Raises `AudioReadError` for a missing,
    unreadable or undecodable file. An empty file decodes to T == 0; validating length is the caller's job.
    """
    label = name or (str(source) if isinstance(source, str | Path) else "<in-memory audio>")
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise AudioReadError(label, "no such file")
    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        data, sample_rate = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as e:
        raise AudioReadError(label, f"{type(e).__name__}: {e}") from e
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # soundfile gives [T, C]
    return wav, int(sample_rate)


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Average the channels: [C, T] -> [1, T], [B, C, T] -> [B, 1, T]; a 1-D [T] stays [T].

    Averaging (not taking channel 0) is what keeps a stereo prompt with the voice on one side audible.
    """
    if wav.dim() == 1:
        return wav
    if wav.dim() not in (2, 3):
        raise ValueError(f"expected audio [T], [C, T] or [B, C, T], got shape {tuple(wav.shape)}")
    if wav.shape[-2] == 1:
        return wav
    return wav.mean(dim=-2, keepdim=True)


def resampled_length(num_samples: int | torch.Tensor, from_sr: int, to_sr: int) -> int | torch.Tensor:
    """Samples after resampling `num_samples` from `from_sr` to `to_sr`: ceil(n * to / from), exactly."""
    if isinstance(num_samples, torch.Tensor):
        return torch.div(num_samples * to_sr + from_sr - 1, from_sr, rounding_mode="floor")
    return -(-num_samples * to_sr // from_sr)


def resample(wav: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Band-limited sinc resampling along the last axis (any leading shape).

    The output has exactly `resampled_length(T, from_sr, to_sr)` samples. Zero padding past an item's end
    stays zero-valued input, so resampling a padded batch equals resampling each item on its valid part.
    """
    from_sr, to_sr = int(from_sr), int(to_sr)
    if from_sr <= 0 or to_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {from_sr} -> {to_sr}")
    if from_sr == to_sr:
        return wav
    n_out = resampled_length(wav.shape[-1], from_sr, to_sr)
    if wav.shape[-1] == 0:
        return wav.new_zeros(*wav.shape[:-1], 0)
    out = _sinc_resample(wav, from_sr, to_sr)
    # torchaudio computes the length through a float32 ceil; pin it to the exact integer one.
    if out.shape[-1] > n_out:
        out = out[..., :n_out]
    elif out.shape[-1] < n_out:
        out = torch.nn.functional.pad(out, (0, n_out - out.shape[-1]))
    return out


# torchaudio's own steps of AF.resample (default filter), so the kernel of a rate pair is built once: building
# it cost as much as applying it to a few seconds of audio, a third of the resampling time when tokenizing
# (scripts/bench_tokenize.py, overhead table). Same kernel, same convolution: bit-identical output.
_KERNEL_STEPS = all(hasattr(_AF_IMPL, f)
                    for f in ("_get_sinc_resample_kernel", "_apply_sinc_resample_kernel"))


@functools.lru_cache(maxsize=64)
def _sinc_kernel(from_sr: int, to_sr: int, device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    return _AF_IMPL._get_sinc_resample_kernel(from_sr, to_sr, math.gcd(from_sr, to_sr), 6, 0.99,
                                              "sinc_interp_hann", None, device, dtype)


def _sinc_resample(wav: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    if not _KERNEL_STEPS or wav.requires_grad or not wav.is_floating_point():
        return AF.resample(wav, from_sr, to_sr)  # another torchaudio, or a case we leave to it
    kernel, width = _sinc_kernel(from_sr, to_sr, wav.device, wav.dtype)
    return _AF_IMPL._apply_sinc_resample_kernel(wav, from_sr, to_sr, math.gcd(from_sr, to_sr), kernel, width)


def pad_batch(wavs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of [C, T] (or [T], read as mono) clips with zeros -> (wav [B, C, T_max], lengths [B]).

    All clips must have the same channel count (call `to_mono` first to mix mono and stereo clips).
    """
    if len(wavs) == 0:
        raise ValueError("pad_batch needs at least one clip")
    items = [w.unsqueeze(0) if w.dim() == 1 else w for w in wavs]
    for i, w in enumerate(items):
        if w.dim() != 2:
            raise ValueError(f"clip {i}: expected [C, T] or [T], got shape {tuple(wavs[i].shape)}")
    channels = {w.shape[0] for w in items}
    if len(channels) != 1:
        raise ValueError(f"clips have different channel counts {sorted(channels)}; down-mix with to_mono")
    lengths = torch.tensor([w.shape[-1] for w in items], dtype=torch.long)
    out = items[0].new_zeros(len(items), items[0].shape[0], int(lengths.max()))
    for i, w in enumerate(items):
        out[i, :, : w.shape[-1]] = w
    return out, lengths


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> [B, max_len] bool, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
