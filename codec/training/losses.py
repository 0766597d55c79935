"""Reconstruction losses for training `RVQCodec` (codec training only).

The bar is intelligibility (STOI, ASR), not studio naturalness, so the codec trains on spectral losses
alone: a multi-scale log-mel L1 (DAC's recipe: short windows for timing, long ones for pitch) plus a small
waveform L1 (EnCodec's time-domain term). No discriminator: it doubles the step cost and mainly buys
naturalness, which the intelligibility bar does not ask for.

Shape letters: B batch, T samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F


class MultiScaleMelLoss(nn.Module):
    """Mean over scales of L1(log10 mel(x), log10 mel(y)), one mel spectrogram per window length."""

    def __init__(self, sample_rate: int, window_lengths: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
                 n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320), clamp_eps: float = 1e-5):
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError("window_lengths and n_mels must have the same length")
        self.clamp_eps = clamp_eps
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=w, win_length=w, hop_length=w // 4, n_mels=m,
                f_min=0.0, f_max=sample_rate / 2, power=1.0, center=True, norm="slaney", mel_scale="slaney",
            )
            for w, m in zip(window_lengths, n_mels, strict=True)
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target [B, 1, T] -> scalar."""
        # STFTs in fp32 under autocast: bf16 magnitudes lose the quiet bands the log is meant to weigh
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target = pred.float().squeeze(1), target.float().squeeze(1)
            losses = []
            for mel in self.mels:
                lp = torch.log10(mel(pred).clamp_min(self.clamp_eps))
                lt = torch.log10(mel(target).clamp_min(self.clamp_eps))
                losses.append(F.l1_loss(lp, lt))
        return torch.stack(losses).mean()


@dataclass
class CodecLossWeights:
    mel: float = 1.0
    waveform: float = 0.1
    commit: float = 1.0


class CodecLoss(nn.Module):
    """Weighted sum of the mel, waveform and commitment terms; returns (total, parts for logging)."""

    def __init__(self, sample_rate: int, weights: CodecLossWeights | None = None):
        super().__init__()
        self.weights = weights or CodecLossWeights()
        self.mel = MultiScaleMelLoss(sample_rate)

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                commit_loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        mel = self.mel(pred, target)
        wave = F.l1_loss(pred.float(), target.float())
        w = self.weights
        total = w.mel * mel + w.waveform * wave + w.commit * commit_loss
        parts = {"mel": mel.detach(), "wave_l1": wave.detach(), "commit": commit_loss.detach()}
        return total, parts
