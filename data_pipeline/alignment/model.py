"""The aligner's frame classifier: features of each 20 ms frame -> log-probabilities over the canonical
phones. Small (a few hundred thousand weights): convolutions see ±100 ms, a bidirectional GRU the rest."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from data_pipeline.alignment.features import FEATURE_DIM
from data_pipeline.alignment.phones import PHONES


@dataclass
class ClassifierConfig:
    feature_dim: int = FEATURE_DIM
    num_phones: int = len(PHONES)
    channels: int = 192
    conv_layers: int = 3
    kernel: int = 5
    rnn_hidden: int = 128
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class _ConvBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, F, C]
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.drop(torch.relu(self.norm(y)))


class FrameClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.feature_dim, cfg.channels)
        self.convs = nn.ModuleList(_ConvBlock(cfg.channels, cfg.kernel, cfg.dropout)
                                   for _ in range(cfg.conv_layers))
        self.rnn = nn.GRU(cfg.channels, cfg.rnn_hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * cfg.rnn_hidden, cfg.num_phones)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, F, feature_dim] -> [B, F, num_phones] log-probabilities (class 0, <none>, is never a label)."""
        x = torch.relu(self.proj(feats))
        for block in self.convs:
            x = block(x)
        x, _ = self.rnn(x)
        return torch.log_softmax(self.out(x), dim=-1)
