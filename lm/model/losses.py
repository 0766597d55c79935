"""AR + NAR cross-entropy over logits aligned with labels (IGNORE_INDEX excluded), plus values to log."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lm.model.batch import LMBatch
from lm.model.model import TTSOutput
from lm.model.vocab import END_TEXT, IGNORE_INDEX


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


def tts_loss(
    output: TTSOutput,
    batch: LMBatch,
    nar_weight: float = 1.0,
    align_weight: float = 0.0,
    align_sigma: float = 0.2,
) -> LossOutput:
    """loss = AR CE (codebook 1 + <eos> of the target) [+ AR CE of the delayed codebooks, when the AR predicts
    more than one] + nar_weight * NAR CE (one sampled codebook j >= ar_codebooks + 1) + align_weight *
    guided-attention loss (when the output carries guided attention probabilities) [+ the phone-advance BCE,
    alignment = "phoneme", logged as `advance_loss`].

    `ar_loss` stays the codebook-1 CE, so it compares across ar_codebooks settings; the delayed codebooks are
    logged as `ar_delayed_loss` and added to the AR part of the loss with weight 1."""
    ar_loss, ar_acc = _cross_entropy(output.ar_logits, batch.labels)
    metrics = {"ar_loss": ar_loss.detach(), "ar_acc": ar_acc.detach()}
    ar_total = ar_loss
    if output.delayed_logits is not None and batch.delayed_labels is not None:
        delayed_loss, delayed_acc = _cross_entropy(output.delayed_logits, batch.delayed_labels)
        metrics.update(ar_delayed_loss=delayed_loss.detach(), ar_delayed_acc=delayed_acc.detach())
        ar_total = ar_loss + delayed_loss
    if output.nar_logits is not None and batch.nar is not None:
        nar_loss, nar_acc = _cross_entropy(output.nar_logits, batch.nar.labels)
        metrics.update(nar_loss=nar_loss.detach(), nar_acc=nar_acc.detach())
    else:
        nar_loss = ar_loss.new_zeros(())
    loss = ar_total + nar_weight * nar_loss
    if output.guided_attention is not None:
        align_loss = guided_attention_loss(output.guided_attention, batch, align_sigma)
        metrics["align_loss"] = align_loss.detach()
        loss = loss + align_weight * align_loss
    if output.advance_logits is not None and batch.advance_labels is not None:
        valid = batch.advance_labels != IGNORE_INDEX
        advance_logits = output.advance_logits[valid].float()
        advance_labels = batch.advance_labels[valid].float()
        # a sum over the labelled frames, not a mean: a batch whose rows all had their phones dropped
        # (data.phone_dropout) has none, and the mean of nothing is NaN
        count = valid.sum().clamp(min=1)
        advance_loss = F.binary_cross_entropy_with_logits(advance_logits, advance_labels,
                                                          reduction="sum") / count
        hits = ((advance_logits > 0).float() == advance_labels).float().sum()
        metrics.update(advance_loss=advance_loss.detach(), advance_acc=(hits / count).detach())
        loss = loss + advance_loss
    metrics["loss"] = loss.detach()
    return LossOutput(loss=loss, ar_loss=ar_loss, nar_loss=nar_loss, metrics=metrics)


def guided_attention_weights(batch: LMBatch, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Penalties W [B, S, S] for query i attending key j, and the mask [B, S] of query rows that count.

    A query that predicts target frame t of F (0-based) counts; its penalty for text piece n of L is
    1 - exp(-((n+½)/L - (t+½)/F)^2 / (2 sigma^2)) (DC-TTS guided attention: near the diagonal costs ~0),
    and 1 for every key that is not text (the prompt, earlier audio, specials), so the guided heads must read
    text.
    """
    ids = batch.input_ids
    bsz, seq = ids.shape
    device = ids.device
    pos = torch.arange(seq, device=device)
    text_end = (ids == END_TEXT).float().argmax(dim=1)  # first </text>; text pieces sit at 1 .. text_end - 1
    text_len = (text_end - 1).clamp(min=1)
    frames = (batch.labels != IGNORE_INDEX).sum(dim=1) - 1  # supervised tokens minus <eos>
    start = batch.target_start - 1  # the query at target_start - 1 + t predicts frame t
    t = pos[None] - start[:, None]  # [B, S] frame index of each query row
    rows = (t >= 0) & (t < frames[:, None])
    n = pos[None] - 1  # [B, S] text index of each key
    is_text = (n >= 0) & (pos[None] < text_end[:, None])
    # bin centres, so a 3-piece text still has a near-zero-cost key for the last frames
    t_frac = (t.float() + 0.5) / frames.clamp(min=1)[:, None].float()
    n_frac = (n.float() + 0.5) / text_len[:, None].float()
    near = torch.exp(-((n_frac[:, None, :] - t_frac[:, :, None]) ** 2) / (2 * sigma**2))
    weights = torch.where(is_text[:, None, :], 1.0 - near, torch.ones_like(near))
    return weights, rows


def guided_attention_loss(probs: torch.Tensor, batch: LMBatch, sigma: float = 0.2) -> torch.Tensor:
    """Mean penalised attention mass of guided heads (probs [B, H, S, S]) over target-frame queries, in
    [0, 1]: 0 when every guided head reads only the text near the diagonal."""
    weights, rows = guided_attention_weights(batch, sigma)
    per_row = (probs.float() * weights[:, None]).sum(dim=-1)  # [B, H, S]
    mask = rows[:, None].expand_as(per_row)
    return per_row[mask].mean() if mask.any() else per_row.sum() * 0.0
