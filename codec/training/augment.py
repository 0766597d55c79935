"""Batched, on-device augmentations for codec training (codec training only).

The corpus is mostly synthetic speech; these widen it towards real recordings (other speaking rates and
vocal-tract lengths, microphones, rooms, background noise). The codec's target is the augmented input
itself, so nothing here needs to be invertible. Each function takes wav [B, 1, T] and a `torch.Generator`
on the same device, and draws a different setting per item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.functional as AF


@dataclass
class AugmentConfig:
    speed_prob: float = 0.5  # one speed factor per batch (changes pitch and formants: new "speakers")
    speeds: tuple[float, ...] = (0.85, 0.9, 0.95, 1.05, 1.1, 1.15)
    eq_prob: float = 0.5  # random smooth spectral tilt / colour, +-eq_db
    eq_db: float = 8.0
    reverb_prob: float = 0.25  # synthetic exponentially decaying room, RT60 in rt60_range
    rt60_range: tuple[float, float] = (0.1, 0.6)
    noise_prob: float = 0.3  # coloured Gaussian noise at an SNR in snr_db_range
    snr_db_range: tuple[float, float] = (15.0, 45.0)
    gain_db_range: tuple[float, float] = (-24.0, 0.0)  # peak level
    max_gain_db: float = 20.0  # never lift a near-silent crop's noise floor by more than this


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def _chance(n: int, p: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) < p).float()[:, None, None]


def speed_ratio(factor: float) -> tuple[int, int]:
    """(orig_freq, new_freq) for resampling that plays audio `factor` times faster: small ints keep the
    polyphase filter short."""
    return int(round(factor * 20)), 20


def random_eq(wav: torch.Tensor, max_db: float, gen: torch.Generator) -> torch.Tensor:
    """Multiply the spectrum by a smooth random curve: 8 random dB gains interpolated over frequency."""
    b, _, t = wav.shape
    spec = torch.fft.rfft(wav.float(), dim=-1)
    knots = (torch.rand(b, 1, 8, generator=gen, device=wav.device) * 2 - 1) * max_db
    curve = torch.nn.functional.interpolate(knots, size=spec.shape[-1], mode="linear", align_corners=True)
    return torch.fft.irfft(spec * 10 ** (curve / 20), n=t, dim=-1)


def random_reverb(wav: torch.Tensor, sample_rate: int, rt60_range: tuple[float, float],
                  gen: torch.Generator) -> torch.Tensor:
    """Convolve with noise under an exponential decay (a crude but cheap room), mixed 1:1 with the dry part
    scaled so the direct sound dominates."""
    b, _, t = wav.shape
    n = int(max(rt60_range) * sample_rate)
    rt60 = _uniform(b, *rt60_range, gen, wav.device)[:, None, None]
    time = torch.arange(n, device=wav.device)[None, None, :] / sample_rate
    ir = torch.randn(b, 1, n, generator=gen, device=wav.device) * torch.exp(-6.9 * time / rt60)
    ir[..., 0] = 0
    ir = ir / ir.norm(dim=-1, keepdim=True).clamp_min(1e-8) * 0.5
    size = t + n
    wet = torch.fft.irfft(torch.fft.rfft(wav.float(), n=size) * torch.fft.rfft(ir, n=size), n=size)[..., :t]
    return wav + wet


def random_noise(wav: torch.Tensor, snr_db_range: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise, coloured by a random one-pole low-pass, at a random SNR."""
    b, _, t = wav.shape
    noise = torch.randn(b, 1, t, generator=gen, device=wav.device)
    noise = random_eq(noise, 12.0, gen)
    snr = _uniform(b, *snr_db_range, gen, wav.device)[:, None, None]
    p_sig = wav.float().pow(2).mean(-1, keepdim=True).clamp_min(1e-8)
    p_noise = noise.pow(2).mean(-1, keepdim=True).clamp_min(1e-8)
    return wav + noise * torch.sqrt(p_sig / p_noise * 10 ** (-snr / 10))


def augment(wav: torch.Tensor, sample_rate: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """EQ, reverb, noise (each with its probability, per item), then a random gain; peaks stay below 0.99."""
    b = wav.shape[0]
    dev = wav.device
    wav = wav.float()
    if cfg.eq_prob > 0:
        m = _chance(b, cfg.eq_prob, gen, dev)
        wav = m * random_eq(wav, cfg.eq_db, gen) + (1 - m) * wav
    if cfg.reverb_prob > 0:
        m = _chance(b, cfg.reverb_prob, gen, dev)
        wav = m * random_reverb(wav, sample_rate, cfg.rt60_range, gen) + (1 - m) * wav
    if cfg.noise_prob > 0:
        m = _chance(b, cfg.noise_prob, gen, dev)
        wav = m * random_noise(wav, cfg.snr_db_range, gen) + (1 - m) * wav
    # normalise the peak, then draw the level: the codec must work from whispers to near full scale
    peak = wav.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4)
    gain_db = _uniform(b, *cfg.gain_db_range, gen, dev)[:, None, None]
    scale = torch.clamp(10 ** (gain_db / 20) / peak, max=10 ** (cfg.max_gain_db / 20))
    wav = wav * scale
    peak = wav.abs().amax(dim=-1, keepdim=True)
    return wav * torch.clamp(0.99 / peak.clamp_min(1e-8), max=1.0)


def change_speed(wav: torch.Tensor, factor: float, num_samples: int) -> torch.Tensor:
    """Resample [B, 1, T] so it plays `factor` times faster; keep the first `num_samples` samples."""
    orig, new = speed_ratio(factor)
    if orig == new:
        return wav[..., :num_samples]
    out = AF.resample(wav, orig, new)
    if out.shape[-1] < num_samples:
        out = torch.nn.functional.pad(out, (0, num_samples - out.shape[-1]))
    return out[..., :num_samples]
