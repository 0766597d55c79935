"""The codec interface every backend implements, and `load_codec(spec)`.

Shape letters: B batch, C channels, T samples, Q codebooks, F frames.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncodedBatch:
    """Codes of a padded batch. Frames past `frame_lengths[b]` are padding (value 0)."""

    codes: torch.Tensor  # [B, Q, F] int64
    frame_lengths: torch.Tensor  # [B] int64


class Codec(abc.ABC, torch.nn.Module):
    """A residual-VQ neural audio codec: wav <-> integer codes.

    Backends implement `_encode_mono` / `_decode_codes` on mono audio at `sample_rate`;
    the public `encode` / `decode` handle padding, lengths, down-mix and resampling.
    """

    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int

    @property
    def hop_length(self) -> int:
        """Samples per frame at `sample_rate`."""
        return int(round(self.sample_rate / self.frame_rate))

    def num_frames(self, num_samples: torch.Tensor | int) -> torch.Tensor | int:
        """Frames the encoder emits for `num_samples` samples at `sample_rate` (ceil division)."""
        hop = self.hop_length
        if isinstance(num_samples, torch.Tensor):
            return torch.div(num_samples + hop - 1, hop, rounding_mode="floor")
        return -(-num_samples // hop)

    @abc.abstractmethod
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None,
               sample_rate: int | None = None) -> EncodedBatch:
        """wav [B, C, T] (any channel count, any rate) -> codes [B, Q, F] + frame lengths."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q, F] -> wav [B, 1, F * hop_length] at `sample_rate`."""
