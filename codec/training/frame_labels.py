"""Phone-labelled codec training audio, and the phone head that makes codebook 1 carry the phone.

A phonetic first level (PAST, arXiv 2505.14470; SpeechTokenizer distils HuBERT into RVQ-1 the same way): a
linear head reads each frame's level-1 code vector and is trained to name the phone sounding there, its
gradient reaching the encoder straight through the quantizer. Codebook 1 then partitions the latent space by
phone rather than by voice, so an LM's phone -> code-1 mapping learned on a few voices can hold for others.

The labels come from the caller as one frame-rate array per clip (the codec package never reads alignments
itself: scripts/train_codec.py builds them from the corpus's `.align.json` sidecars).

Shape letters: B batch, T samples, F frames, D latent dimension, C phone classes.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class FrameLabelPool:
    """Clips with one label per codec frame, concatenated; random frame-aligned crops by index math.

    Each clip is cut or zero-padded to exactly `len(labels) * hop` samples, so frame f of the pool starts at
    sample f * hop and a crop that starts on a frame boundary keeps its labels exact.
    """

    def __init__(self, clips: list[tuple[torch.Tensor, torch.Tensor]], hop: int, device: torch.device):
        if not clips:
            raise ValueError("FrameLabelPool needs at least one labelled clip")
        self.hop = hop
        audio, labels = [], []
        for wav, lab in clips:
            wav, lab = wav.flatten().float(), lab.flatten().long()
            n = lab.numel() * hop
            audio.append(F.pad(wav[:n], (0, max(0, n - wav.numel()))))
            labels.append(lab)
        self.audio = torch.cat(audio).to(device)
        self.labels = torch.cat(labels).to(device)
        self.frames = self.labels.numel()

    def sample(self, batch: int, frames: int, gen: torch.Generator, speed: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (wav [B, 1, ceil(frames * speed) * hop + 64], labels [B, frames]): audio to be played `speed`
        times faster into `frames` frames (augment.change_speed), with the labels of the frames it becomes."""
        src_frames = int(math.ceil(frames * speed)) + 1
        if self.frames <= src_frames:
            raise ValueError(f"labelled audio has {self.frames} frames, a crop needs {src_frames}")
        device = self.labels.device
        starts = torch.randint(0, self.frames - src_frames, (batch,), generator=gen, device=device)
        num_samples = src_frames * self.hop
        wav = self.audio[(starts * self.hop)[:, None] + torch.arange(num_samples, device=device)[None, :]]
        # output frame t covers source frames [t * speed, (t + 1) * speed): label it by its centre
        centre = ((torch.arange(frames, device=device) + 0.5) * speed).long().clamp(max=src_frames - 1)
        return wav[:, None, :], self.labels[starts[:, None] + centre[None, :]]


class PhoneHead(nn.Module):
    """Linear phone classifier on the level-1 code vectors: latents [B, D, F] and codes [B, Q, F] of one
    training forward -> logits [B, F, C]. The code vector is passed straight through to the latents, so the
    loss moves the encoder (the EMA codebook follows the latents it is assigned)."""

    def __init__(self, dimension: int, num_classes: int):
        super().__init__()
        self.proj = nn.Linear(dimension, num_classes)

    def forward(self, codebook_1: torch.Tensor, latents: torch.Tensor, codes_1: torch.Tensor) -> torch.Tensor:
        latents = latents.transpose(1, 2).float()  # [B, F, D]
        chosen = codebook_1[codes_1]  # [B, F, D]
        return self.proj(latents + (chosen - latents).detach())


def phone_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over frames and the share of frames named right (for the logs)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return loss, (logits.argmax(-1) == labels).float().mean()
