"""The aligner's frame classifier: features of each 20 ms frame -> log-probabilities over the canonical
phones. Small and convolutional: dilated convolutions see about ±0.4 s around each frame (an optional
bidirectional GRU sees the whole clip, but trains ~10x slower on a CPU)."""

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
    conv_layers: int = 5
    kernel: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1)  # per layer, repeated if shorter
    rnn_hidden: int = 0  # 0: no GRU
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.dilations = tuple(self.dilations)

    def to_dict(self) -> dict:
        return asdict(self)


class _ConvBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dropout: float, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation)
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
        dilations = [cfg.dilations[i % len(cfg.dilations)] for i in range(cfg.conv_layers)]
        self.convs = nn.ModuleList(_ConvBlock(cfg.channels, cfg.kernel, cfg.dropout, d) for d in dilations)
        self.rnn = None
        width = cfg.channels
        if cfg.rnn_hidden:
            self.rnn = nn.GRU(cfg.channels, cfg.rnn_hidden, batch_first=True, bidirectional=True)
            width = 2 * cfg.rnn_hidden
        self.out = nn.Linear(width, cfg.num_phones)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, F, feature_dim] -> [B, F, num_phones] log-probabilities (class 0, <none>, is never a label)."""
        x = torch.relu(self.proj(feats))
        for block in self.convs:
            x = block(x)
        if self.rnn is not None:
            x, _ = self.rnn(x)
        return torch.log_softmax(self.out(x), dim=-1)
