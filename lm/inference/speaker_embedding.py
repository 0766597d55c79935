"""Speaker embeddings: resemblyzer (GE2E d-vector), compared by cosine.

Synthesis uses it to pick the house voice nearest a prompt (lm/inference/house_voices.py); evaluation
scores speaker similarity with it (evaluation/speaker.py re-exports this module). The encoder's weights ship
inside the `resemblyzer` wheel (the `eval` extra). resemblyzer imports `webrtcvad`, which imports
`pkg_resources`, hence the `setuptools<81` pin in the eval extra.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
import torchaudio.functional as AF

log = logging.getLogger(__name__)

SPEAKER_SAMPLE_RATE = 16000
# resemblyzer zero-pads short audio to one 1.6 s partial; below 0.1 s there are too few mel frames to mean
# anything. Short babble is still embedded (and scores low) rather than dropping out of the SIM mean.
MIN_SECONDS = 0.1
SILENCE_RMS = 1e-5  # about -100 dBFS: digital silence, whose volume normalisation would divide by zero


class SpeakerEncoder:
    """Loaded once, reused. Embeddings are L2-normed, so similarity is a dot product in [-1, 1]."""

    def __init__(self, device: str = "cpu") -> None:
        with warnings.catch_warnings():  # resemblyzer imports a deprecated scipy.ndimage path
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder

        # resemblyzer calls torch.load without weights_only; torch>=2.6 defaults it to True, so the bundled
        # checkpoint is read as plain tensors. Refuse older torch rather than unpickle arbitrary objects.
        if tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 6):
            raise RuntimeError("speaker similarity needs torch>=2.6 (safe torch.load default)")
        self._encoder = VoiceEncoder(device=device, verbose=False)
        self.device = device

    @staticmethod
    def describe() -> dict:
        return {"model": "resemblyzer VoiceEncoder (GE2E, bundled pretrained.pt)", "metric": "cosine"}

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float32 [T] -> [256] unit vector, preprocessed as resemblyzer does (volume, silence trim)."""
        from resemblyzer.audio import normalize_volume, trim_long_silences
        from resemblyzer.hparams import audio_norm_target_dBFS

        audio = np.asarray(wav, dtype=np.float32)
        if sample_rate != SPEAKER_SAMPLE_RATE:
            # torchaudio's sinc resampling, as evaluation.audio.resample (the SIM figures stay comparable)
            audio = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), sample_rate,
                                SPEAKER_SAMPLE_RATE).numpy()
        if len(audio) < MIN_SECONDS * SPEAKER_SAMPLE_RATE:
            raise ValueError(f"audio is {len(audio) / SPEAKER_SAMPLE_RATE:.2f} s; too short to embed")
        if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENCE_RMS:
            raise ValueError("audio is silent; no speaker to embed")
        audio = normalize_volume(audio, audio_norm_target_dBFS, increase_only=True)
        trimmed = trim_long_silences(audio)
        # The VAD can remove almost everything from noise-like output; embed it untrimmed rather than fail,
        # so a babbling system still gets a (low) similarity instead of dropping out of the mean.
        if len(trimmed) >= MIN_SECONDS * SPEAKER_SAMPLE_RATE:
            audio = trimmed
        return self._encoder.embed_utterance(audio.astype(np.float32))

    def similarity(self, wav_a: np.ndarray, rate_a: int, wav_b: np.ndarray, rate_b: int) -> float:
        return cosine(self.embed(wav_a, rate_a), self.embed(wav_b, rate_b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
