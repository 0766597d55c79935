"""A voice prompt at the codec's rate, checked (`prompt_at_codec_rate`), and one seed from several
(`mix_seeds`): the Synthesizer's input helpers (lm/inference/synthesizer.py, lm/inference/streaming.py)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from codec.audio import resample, to_mono
from lm.inference.synthesis_types import SynthesisError

log = logging.getLogger("lm.inference.synthesizer")

MIN_PROMPT_SECONDS = 0.25


def prompt_at_codec_rate(wav: np.ndarray | torch.Tensor, sample_rate: int, codec_rate: int,
                          name: str) -> torch.Tensor:
    """Any prompt ([T], [C, T], or soundfile's [T, C]) -> mono float32 [1, T'] at the codec rate."""
    if not isinstance(wav, torch.Tensor):
        wav = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    wav = wav.detach().float().cpu()
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise SynthesisError(f"{name}: the prompt must be [T] or [C, T], got shape {tuple(wav.shape)}")
    if wav.shape[0] > 16 >= wav.shape[1]:  # [T, C] as soundfile returns it: no real prompt has > 16 channels
        wav = wav.T
    if not isinstance(sample_rate, int | float | np.number) or not 0 < sample_rate == int(sample_rate):
        raise SynthesisError(f"{name}: prompt_sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    if not torch.isfinite(wav).all():
        raise SynthesisError(f"{name}: the prompt holds NaN or infinite samples")
    if wav.shape[-1] < MIN_PROMPT_SECONDS * sample_rate:
        raise SynthesisError(f"{name}: the prompt is {wav.shape[-1] / sample_rate:.3f} s long; a voice "
                             f"prompt needs at least {MIN_PROMPT_SECONDS} s (3-10 s works best)")
    if float(wav.abs().max()) < 1e-4:
        log.warning("%s: the prompt is silent; the voice will be arbitrary", name)
    return resample(to_mono(wav), sample_rate, codec_rate)


def mix_seeds(seeds: list[int]) -> int:
    """One 63-bit seed from several (a batch's random stream depends on all of its requests' seeds)."""
    state = np.random.SeedSequence([s % 2**32 for s in seeds]).generate_state(2, np.uint32)
    return int(state.view(np.uint64)[0] >> 1)


