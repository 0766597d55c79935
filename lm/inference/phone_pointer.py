"""The pointer that walks a phone-aligned model's target phones during AR decoding
(`lm.inference.ar_loop.generate_ar`): the phone inputs of the prefix, given durations, and when the advance
head (VALL-E R) moves on."""

from __future__ import annotations

import torch


def phone_setup(
    prompts: list[torch.Tensor],
    phone_seqs: list[torch.Tensor] | None,
    prefix_phones: list[torch.Tensor] | None,
    prefix_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (target phones [B, P] 0-padded, phones per row [B], prefix phone inputs [B, prefix_len, 2]
    left-padded like the prompts, the last slot reading the first target phone)."""
    if phone_seqs is None or len(phone_seqs) != len(prompts):
        raise ValueError("this model is phone-aligned: pass one phone sequence per prompt (phone_seqs)")
    if any(p.numel() == 0 for p in phone_seqs):
        raise ValueError("every row needs at least one target phone")
    bsz = len(prompts)
    width = max(p.numel() for p in phone_seqs)
    ids = torch.zeros(bsz, width, dtype=torch.long)
    inputs = torch.zeros(bsz, prefix_len, 2, dtype=torch.long)
    for b, (prompt, phones) in enumerate(zip(prompts, phone_seqs, strict=True)):
        ids[b, : phones.numel()] = phones.cpu()
        if prefix_phones is not None:
            given = prefix_phones[b].cpu()
            if tuple(given.shape) != (prompt.numel(), 2):
                raise ValueError(f"row {b}: prefix phones {tuple(given.shape)} do not fit its prompt of "
                                 f"{prompt.numel()} tokens")
            inputs[b, prefix_len - prompt.numel():] = given
        inputs[b, -1] = torch.tensor([int(phones[0]), 0])
    return ids, torch.tensor([p.numel() for p in phone_seqs]), inputs


def given_durations(
    durations: list[torch.Tensor | None] | None, bsz: int, width: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """-> (rows with given durations [B] bool, frames per phone [B, width]) or (None, None)."""
    if durations is None or all(d is None for d in durations):
        return None, None
    if len(durations) != bsz:
        raise ValueError(f"phone_durations: {len(durations)} rows for a batch of {bsz}")
    rows = torch.zeros(bsz, dtype=torch.bool)
    table = torch.ones(bsz, width, dtype=torch.long)
    for b, d in enumerate(durations):
        if d is not None:
            rows[b] = True
            table[b, : d.numel()] = d.long().cpu()
    return rows.to(device), table.to(device)


def advance_phones(
    logits: torch.Tensor,
    median_rows: torch.Tensor,
    generator: torch.Generator | None,
    in_phone: torch.Tensor,
    max_frames: int,
    stay: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each row's frame is its phone's last, and the rows' new `stay`. Other rows draw it from the
    advance head's p. The head is a hazard (p ~ 1 / duration per frame), so "p > 0.5" would hold every phone
    far too long; `median_rows` (greedy rows, or all with phone_durations="median") instead end a phone at its
    median length: when the probability that it lasts past this frame, the product of (1 - p) over its
    frames (`stay`), falls below one half. A phone held for `max_frames` frames is left regardless."""
    p = torch.sigmoid(logits)
    drawn = torch.rand(p.shape, generator=generator, device=p.device) < p if generator is not None \
        else torch.rand_like(p) < p
    stay = stay * (1.0 - p)
    decided = torch.where(median_rows.view(-1), stay < 0.5, drawn) | (in_phone + 1 >= max_frames)
    return decided, torch.where(decided, torch.ones_like(stay), stay)
