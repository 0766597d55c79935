"""Sampling as a few pure tensor ops. Knobs are per-row tensors [B, 1]; `torch.where` instead of `if`, so one
graph serves greedy and sampled rows alike (and the decode step stays compilable). Randomness comes only from
the `torch.Generator` passed in (it must live on the logits' device).

Shape letters: B batch, V classes.
"""

from __future__ import annotations

import torch


def as_row_tensor(
    value: float | int | list | torch.Tensor, batch_size: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """A scalar or per-row knob -> [B, 1] tensor."""
    t = torch.as_tensor(value, dtype=dtype, device=device).reshape(-1, 1)
    if t.shape[0] not in (1, batch_size):
        raise ValueError(f"per-row knob has {t.shape[0]} values for a batch of {batch_size}")
    return t.expand(batch_size, 1).contiguous()


def apply_repetition_penalty(
    logits: torch.Tensor, counts: torch.Tensor, penalty: torch.Tensor
) -> torch.Tensor:
    """CTRL-style penalty on classes with counts > 0: positive logits / penalty, negative logits * penalty."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(counts > 0, penalised, logits)


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep the top_k largest logits per row (top_k <= 0 keeps all)."""
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab).long()
    kth = logits.sort(dim=-1, descending=True).values.gather(-1, k - 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of classes whose probability reaches top_p (always >= 1
    class)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    remove_sorted = (
        mass_before >= top_p
    )  # the first class has mass_before 0, so it is always kept (top_p > 0)
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits [B, V] -> classes [B]. Rows with temperature <= 0 take the argmax (greedy).

    The draw is argmax(p / E) with E ~ Exp(1), which is an exact categorical sample (Gumbel-max in disguise)
    and avoids torch.multinomial's host sync.
    """
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    scaled = logits / temperature.clamp(min=1e-5)
    probs = apply_top_p(apply_top_k(scaled, top_k), top_p).softmax(dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    sampled = (probs / noise).argmax(dim=-1)
    return torch.where(temperature.squeeze(-1) > 0, sampled, greedy)
