"""The NAR passes (`generate_nar`): codebooks ar_codebooks+1..Q, one bidirectional pass each over the whole
target, after the AR (lm/inference/ar_loop.py) has made its codebooks.

Shape letters: B batch, L text pieces, Q codebooks, F frames, Fp prompt frames, K codes.
"""

from __future__ import annotations

import torch

from lm.inference.sampling import as_row_tensor, sample
from lm.model.batch import nar_inputs
from lm.model.model import TTSModel


# -- NAR -----------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_nar(
    model: TTSModel,
    text_ids: torch.Tensor,
    text_lengths: torch.Tensor,
    prompt_codes: torch.Tensor,
    prompt_lengths: torch.Tensor,
    first_codes: torch.Tensor,
    frame_lengths: torch.Tensor,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    frame_phones: torch.Tensor | None = None,
    advance_generator: bool = True,
) -> torch.Tensor:
    """Fill codebooks A+1..Q: text_ids [B, L], prompt_codes [B, Q, Fp], first_codes [B, F] (A = 1) or
    [B, A, F] (the AR's codebooks) -> [B, Q, F]. frame_phones [B, F]: a phone-aligned NAR's per-frame
    phones (what the AR generated each frame for). Greedy passes (temperature <= 0) still draw the noise a
    sampled pass would, so the generator goes on as before; advance_generator=False skips that draw (for a
    caller whose generator serves nothing after it)."""
    if first_codes.dim() == 2:
        first_codes = first_codes[:, None]
    num_q, bsz, num_first, frames = model.config.num_codebooks, *first_codes.shape
    device = first_codes.device
    codes = torch.zeros(bsz, num_q, frames, dtype=torch.long, device=device)
    codes[:, :num_first] = first_codes
    valid = torch.arange(frames, device=device)[None] < frame_lengths[:, None]
    row = {"batch_size": bsz * frames, "device": device}
    temp = as_row_tensor(temperature, dtype=torch.float32, **row)
    no_k = as_row_tensor(0, dtype=torch.long, **row)
    no_p = as_row_tensor(1.0, dtype=torch.float32, **row)
    greedy = not isinstance(temperature, list | tuple | torch.Tensor) and temperature <= 0
    for stage in range(num_first, num_q):
        inp = nar_inputs(
            text_ids,
            text_lengths,
            prompt_codes,
            prompt_lengths,
            codes,
            frame_lengths,
            torch.full((bsz,), stage, device=device),
            frame_phones=frame_phones,
        )
        logits = model.nar(inp)  # [B, F, K]
        if greedy:  # what `sample` returns for temperature <= 0, without its sorts over K classes per frame
            picked = logits.argmax(dim=-1)
            if advance_generator:  # the noise `sample` draws all the same: a seeded stream goes on as before
                noise = torch.empty(bsz * frames, logits.shape[-1], device=device)
                noise.exponential_(1.0, generator=generator)
        else:
            picked = sample(logits.flatten(0, 1), temp, no_k, no_p, generator).view(bsz, frames)
        codes[:, stage] = torch.where(valid, picked, 0)
    return codes
