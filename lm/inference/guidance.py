"""Classifier-free guidance on the phones of a phone-aligned AR (`SamplingConfig.phone_guidance`).

The AR runs every row twice in one batch: as given (rows 0..B-1) and with no target phones (rows B..2B-1:
every target slot reads phone 0, "none", as text and prompt slots do in training), and samples from

    uncond + scale * (cond - uncond)

so the codes lean towards what the phones say and away from what the audio history alone predicts. Why:
the free-running AR's own codes drift (scripts/diagnose_stages.py: teacher-forced codes are far more
intelligible than sampled ones), and the drift is the audio-LM half of the model taking over; guidance is
the inference-side lever for that, as in Koel-TTS and F5-TTS (there trained with condition dropout; here
the "none" phone is already what every non-target slot carries). Both halves share the sampled codes and
the phone pointer; the advance head is read from the conditioned half. scale 1 is off (no second half).
"""

from __future__ import annotations

import torch


def doubled(x: torch.Tensor | None, uncond: torch.Tensor | None = None) -> torch.Tensor | None:
    """[B, ...] -> [2B, ...]: the conditioned rows, then `uncond` (default: the same rows again)."""
    if x is None:
        return None
    return torch.cat([x, x if uncond is None else uncond], dim=0)


def unconditioned_prefix(phone_inputs: torch.Tensor) -> torch.Tensor:
    """Prefix phone inputs [B, P, 2] of the unconditioned half: the prompt's own phones stay (continuation
    mode: they describe audio that is already there), the last slot, which reads the first target phone,
    reads none."""
    out = phone_inputs.clone()
    out[:, -1] = 0
    return out


def guided(x: torch.Tensor | None, scale: float) -> torch.Tensor | None:
    """[2B, ...] logits of both halves -> [B, ...] guided logits."""
    if x is None:
        return None
    cond, uncond = x.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


def conditioned(x: torch.Tensor | None) -> torch.Tensor | None:
    """[2B, ...] -> the conditioned half [B, ...]."""
    return None if x is None else x.chunk(2, dim=0)[0]
