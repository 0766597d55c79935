"""Audio I/O for evaluation: read any file to mono float32, resample, write.

Shape letters: C channels, T samples. Every metric model has its own rate (Whisper, resemblyzer, DNSMOS and
PESQ-WB all want 16 kHz), so the harness keeps audio at its native rate and converts at each metric's edge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF


class AudioError(ValueError):
    """An audio file or array that cannot be evaluated; the message names the file and the reason."""


def to_mono(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """[T], [C, T] (channels first, as the synthesizer and codec use) -> mono float32 [T] by averaging."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().float().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=0)
    if wav.ndim != 1:
        raise AudioError(f"expected audio shaped [T] or [C, T], got {wav.shape}")
    return wav


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file -> (mono float32 [T], sample rate). Raises AudioError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise AudioError(f"{path}: unreadable audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio")
    wav = data.mean(axis=1)
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: audio contains NaN or inf")
    return wav.astype(np.float32), int(sample_rate)


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of mono float32 [T] (torchaudio's sinc interpolation)."""
    if orig_rate == new_rate:
        return np.asarray(wav, dtype=np.float32)
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), orig_rate, new_rate)
    return out.numpy()


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write mono float32 [T] as 16-bit PCM wav (clipped to [-1, 1])."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")
