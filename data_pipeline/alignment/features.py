"""Acoustic features the aligner reads, one row per 20 ms frame (the codec's 50 Hz): hama's phoneme
posteriors plus a per-utterance normalised log-mel spectrogram.

hama (PyPI `hama`, Apache-2.0) is a multilingual IPA phoneme CTC recogniser trained on real speech: its
log-probabilities say *which* phone is near, the mel frames say *where* it starts (a CTC model's peaks lag
the onset by ~90 ms here). Frame f covers samples [320 f, 320 (f + 1)) at 16 kHz.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

import numpy as np
import torch
import torchaudio

SAMPLE_RATE = 16000
HOP = 320
FRAME_RATE = SAMPLE_RATE / HOP  # 50.0
N_MELS = 80
HAMA_DIM = 191
FEATURE_DIM = HAMA_DIM + N_MELS


def hama_version() -> str:
    try:
        return metadata.version("hama")
    except metadata.PackageNotFoundError:
        return "missing"


@lru_cache(maxsize=1)
def _hama_model():  # noqa: ANN202 - hama's own class
    try:
        import hama
    except ImportError as e:  # pragma: no cover - hama is a dependency
        raise RuntimeError("the aligner needs the `hama` package (pip install hama)") from e
    return hama.ASRModel()


@lru_cache(maxsize=1)
def _mel() -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=1024, win_length=640,
                                                hop_length=HOP, n_mels=N_MELS, center=True)


def num_frames(num_samples: int) -> int:
    return -(-num_samples // HOP)


def hama_log_probs(wav: np.ndarray) -> np.ndarray:
    """[F, 191] hama log-probabilities for 16 kHz mono float audio."""
    model = _hama_model()
    x = np.ascontiguousarray(wav, dtype=np.float32)[None]
    log_probs, lengths = model.session.run(["log_probs", "out_lengths"],
                                           {"waveform": x, "waveform_lengths": np.array([x.shape[1]])})
    return np.asarray(log_probs[0, : int(np.asarray(lengths).reshape(-1)[0])], dtype=np.float32)


def log_mel(wav: np.ndarray) -> np.ndarray:
    """[F, 80] log-mel, normalised to zero mean / unit variance per bin over the utterance."""
    with torch.no_grad():
        mel = _mel()(torch.from_numpy(np.asarray(wav, dtype=np.float32)))  # [80, F + 1]
    feats = torch.log(mel + 1e-5).T.numpy()
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-3)
    return feats.astype(np.float32)


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    if len(x) >= frames:
        return x[:frames]
    return np.concatenate([x, np.repeat(x[-1:], frames - len(x), axis=0)])


def frame_features(wav: np.ndarray) -> np.ndarray:
    """16 kHz mono float32 audio -> [ceil(T / 320), 271] features."""
    if wav.ndim != 1 or len(wav) < HOP:
        raise ValueError(f"need mono audio of at least {HOP} samples, got shape {wav.shape}")
    frames = num_frames(len(wav))
    return np.concatenate([_fit(hama_log_probs(wav), frames), _fit(log_mel(wav), frames)], axis=1)
