"""The optimizer's settings the trainer passes DeepSpeed: the learning-rate schedule (linear warmup, then
cosine) and the parameter groups for weight decay. The LoRA fine-tuning loop uses both too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WarmupCosine:
    """lr multiplier at optimizer step s: linear warmup, then cosine to `min_ratio` at `total_steps`."""

    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear and embedding weights), none on norms, biases and other 1-d
    parameters (nanoGPT's rule)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
