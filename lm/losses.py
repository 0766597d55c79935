"""AR + NAR cross-entropy over logits aligned with labels (IGNORE_INDEX excluded), plus values to log."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lm.model import TTSOutput
from lm.sequence import LMBatch
from lm.vocab import IGNORE_INDEX


@dataclass
class LossOutput:
    loss: torch.Tensor  # the scalar to backpropagate
    ar_loss: torch.Tensor
    nar_loss: torch.Tensor
    metrics: dict[
        str, torch.Tensor
    ]  # detached scalars for logging; `.item()` them only when logging (GPU sync)

    def __iter__(self):  # allows `loss, *_ = tts_loss(...)`
        return iter((self.loss, self.ar_loss, self.nar_loss, self.metrics))


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CE over labelled positions (computed in fp32) and the argmax accuracy there."""
    flat_logits, flat_labels = logits.flatten(0, -2).float(), labels.flatten()
    loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)
    valid = flat_labels != IGNORE_INDEX
    acc = (flat_logits.argmax(-1)[valid] == flat_labels[valid]).float().mean()
    return loss, acc


def tts_loss(output: TTSOutput, batch: LMBatch, nar_weight: float = 1.0) -> LossOutput:
    """loss = AR CE (codebook 1 + <eos> of the target) + nar_weight * NAR CE (one sampled codebook j >= 2)."""
    ar_loss, ar_acc = _cross_entropy(output.ar_logits, batch.labels)
    metrics = {"ar_loss": ar_loss.detach(), "ar_acc": ar_acc.detach()}
    if output.nar_logits is not None and batch.nar is not None:
        nar_loss, nar_acc = _cross_entropy(output.nar_logits, batch.nar.labels)
        metrics.update(nar_loss=nar_loss.detach(), nar_acc=nar_acc.detach())
    else:
        nar_loss = ar_loss.new_zeros(())
    loss = ar_loss + nar_weight * nar_loss
    metrics["loss"] = loss.detach()
    return LossOutput(loss=loss, ar_loss=ar_loss, nar_loss=nar_loss, metrics=metrics)
