"""A cheap spectral encoder / decoder for `RVQCodec` (architecture "spectral"): all layers run at frame rate.

Encoder: log-magnitude STFT (hop = hop_length / 2) -> strided conv to the frame rate -> ConvNeXt blocks.
Decoder: ConvNeXt blocks at the frame rate -> per-frame log-magnitude and phase -> inverse STFT (Vocos,
WavTokenizer). Compared with the SEANet pair, nothing runs at the sample rate, so a step costs about a tenth
of the arithmetic, as matrix products: the design that lets a 2-core CPU train a usable codec in hours.

Shape letters: B batch, T samples, F frames, D latent dimension.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> MLP (x3) with GELU -> layer scale, residual. [B, C, F] -> same."""

    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 3 * dim)
        self.pwconv2 = nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).transpose(1, 2)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class SpectralEncoder(nn.Module):
    """wav [B, 1, T] (T a multiple of hop_length) -> latents [B, D, T / hop_length]."""

    def __init__(self, hop_length: int, dim: int, dimension: int, num_layers: int):
        super().__init__()
        if hop_length % 2:
            raise ValueError(f"the spectral encoder needs an even hop_length, got {hop_length}")
        self.hop = hop_length // 2
        self.n_fft = 2 * hop_length
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        bins = self.n_fft // 2 + 1
        # kernel 4, stride 2 over half-hop frames: each latent frame sees 4 STFT frames (~2.5 hops of audio)
        self.embed = nn.Conv1d(bins, dim, 4, stride=2, padding=1)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Conv1d(dim, dimension, 1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spec = torch.stft(wav.float().squeeze(1), self.n_fft, self.hop, window=self.window, center=True,
                              return_complex=True)[..., :-1]  # T / hop frames: drop the extra centred one
            feats = torch.log(spec.abs().clamp_min(1e-5))
        h = self.blocks(self.embed(feats.to(wav.dtype)))
        return self.proj(self.norm(h.transpose(1, 2)).transpose(1, 2))


class SpectralDecoder(nn.Module):
    """latents [B, D, F] -> wav [B, 1, F * hop_length] through an inverse STFT (n_fft = 4 * hop_length)."""

    def __init__(self, hop_length: int, dim: int, dimension: int, num_layers: int):
        super().__init__()
        self.hop = hop_length
        self.n_fft = 4 * hop_length
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.embed = nn.Conv1d(dimension, dim, 7, padding=3)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2 * (self.n_fft // 2 + 1))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(latents))
        out = self.head(self.norm(h.transpose(1, 2))).transpose(1, 2).float()  # [B, 2 * bins, F]
        with torch.autocast(device_type=latents.device.type, enabled=False):
            log_mag, phase = out.chunk(2, dim=1)
            mag = torch.exp(log_mag.clamp(max=6.0))  # bounded: a wild early step cannot overflow
            spec = torch.polar(mag, phase)
            num_t = latents.shape[-1] * self.hop
            # frame f is centred on sample f * hop (center=True), so F frames cover exactly F * hop samples
            wav = torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=num_t)
        return wav.clamp(-1.0, 1.0).unsqueeze(1)
