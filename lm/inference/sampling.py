"""Sampling: the decoding knobs (`SamplingConfig`), and sampling itself as a few pure tensor ops. Knobs are
per-row tensors [B, 1]; `torch.where` instead of `if`, so one graph serves greedy and sampled rows alike
(and the decode step stays compilable). Randomness comes only from the `torch.Generator` passed in (it must
live on the logits' device).

Shape letters: B batch, V classes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class SamplingConfig:
    """Decoding knobs. temperature / top_k / top_p / repetition_penalty may be per-row lists."""

    temperature: float | list[float] = 1.0  # <= 0: greedy
    top_k: int | list[int] = 0  # <= 0: off
    top_p: float | list[float] = 1.0  # >= 1: off
    repetition_penalty: float | list[float] = 1.0  # 1: off
    repetition_window: int = 16  # penalise codes seen in the last N frames (0: the whole output so far)
    max_new_frames: int = 1500  # absolute cap (20 s at 75 Hz)
    # length guard tied to the text: a row is stopped (and flagged) after
    # ceil(max_frames_per_text_token * text_len) + guard_slack_frames frames.
    max_frames_per_text_token: float = 40.0
    guard_slack_frames: int = 75
    # <eos> is impossible before max(min_new_frames, min_frames_per_text_token * text_len) frames
    min_new_frames: int = 1
    min_frames_per_text_token: float = 0.0
    nar_temperature: float = 0.0  # NAR passes are greedy by default (as in VALL-E)
    max_phone_frames: int = 40  # phone-aligned models: a phone held this many frames is left
    # phone-aligned models, sampled rows: "sample" draws each frame's advance from the head; "median" ends
    # every phone at its median length, as greedy rows always do (the codes are still sampled)
    phone_durations: str = "sample"
    # phone-aligned models: classifier-free guidance on the target phones (lm/inference/guidance.py); 1: off
    phone_guidance: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> SamplingConfig:
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown sampling keys {sorted(set(d) - known)}")
        return cls(**d)

    def __post_init__(self) -> None:
        if self.phone_durations not in ("sample", "median"):
            raise ValueError(f"phone_durations must be 'sample' or 'median', got {self.phone_durations!r}")
        if not self.phone_guidance > 0:
            raise ValueError(f"phone_guidance must be > 0 (1: off), got {self.phone_guidance}")


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
