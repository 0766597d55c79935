"""A compact SEANet-style convolutional encoder / decoder (EnCodec, DAC) for `RVQCodec`.

Non-causal, no normalisation layers, Snake activations (DAC): a periodic activation lets a small decoder
make harmonics without a discriminator. Every strided layer pads so that the encoder turns exactly
`F * hop` samples into `F` frames and the decoder turns `F` frames into exactly `F * hop` samples.

Shape letters: B batch, T samples, F frames, D latent dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned alpha per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.to(x.dtype)
        return x + torch.sin(alpha * x).pow(2) / (alpha + 1e-9)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv (k=7) -> Snake -> 1x1 conv, added to the input; length preserving."""

    def __init__(self, channels: int, dilation: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            nn.Conv1d(channels, hidden, 7, dilation=dilation, padding=3 * dilation),
            Snake(hidden),
            nn.Conv1d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Downsample(nn.Module):
    """Strided conv, kernel 2*stride: L samples -> exactly L // stride (L a multiple of stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # total padding kernel - stride keeps the output length at L / stride (asymmetric for odd strides)
        left = self.stride // 2
        return self.conv(F.pad(x, (left, self.stride - left)))


class Upsample(nn.Module):
    """Transposed conv with kernel 2*stride that maps L frames to exactly L * stride samples."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (L - 1) * s + 2 s = L s + s samples: trim s, mirroring Downsample's padding
        left = self.stride // 2
        return y[..., left : y.shape[-1] - (self.stride - left)]


def _residual_stack(channels: int, dilations: Sequence[int], compress: int) -> list[nn.Module]:
    return [ResidualUnit(channels, d, max(channels // compress, 8)) for d in dilations]


class SEANetEncoder(nn.Module):
    """wav [B, 1, T] -> latents [B, D, T / prod(strides)]."""

    def __init__(self, channels: int, dimension: int, strides: Sequence[int], dilations: Sequence[int],
                 compress: int = 2, max_channels: int = 512):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, channels, 7, padding=3)]
        ch = channels
        for stride in strides:
            out_ch = min(ch * 2, max_channels)
            layers += _residual_stack(ch, dilations, compress)
            layers += [Snake(ch), Downsample(ch, out_ch, stride)]
            ch = out_ch
        layers += [Snake(ch), nn.Conv1d(ch, dimension, 3, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model(wav)


class SEANetDecoder(nn.Module):
    """latents [B, D, F] -> wav [B, 1, F * prod(strides)] in [-1, 1]."""

    def __init__(self, channels: int, dimension: int, strides: Sequence[int], dilations: Sequence[int],
                 compress: int = 2, max_channels: int = 512):
        super().__init__()
        ch = min(channels * 2 ** len(strides), max_channels)
        layers: list[nn.Module] = [nn.Conv1d(dimension, ch, 7, padding=3)]
        for i, stride in enumerate(reversed(strides)):
            out_ch = min(channels * 2 ** (len(strides) - i - 1), max_channels)
            layers += [Snake(ch), Upsample(ch, out_ch, stride)]
            layers += _residual_stack(out_ch, dilations, compress)
            ch = out_ch
        layers += [Snake(ch), nn.Conv1d(ch, 1, 7, padding=3)]
        self.model = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        # tanh keeps the output a valid waveform; the loss never pushes it to saturate on speech levels
        return torch.tanh(self.model(latents))


def hop_of(strides: Sequence[int]) -> int:
    return math.prod(strides)
