"""Move a trained LM onto a new codec's codes without starting from scratch.

A retrained codec (a new encoder and codebooks) gives codes that mean something else: `codec_rvq16k` and
`_v3` agree on ~0.1 % of frames. What the LM learnt about text, phones, timing and speakers lives in its
transformer layers, not in the code tables, so this keeps every layer and rebuilds only the code tables:
tokenize the same clips with both codecs, count which old code sounds at the frames where each new code sounds
(per codebook level), and give each new code the mix of old rows in those proportions. Rows touched:

    ar.model.embed_tokens   the codebook-1 input rows (after the specials and text pieces)
    ar.code_head            the codebook-1 output rows (the <eos> row after them is kept)
    nar.code_embed          every level's input rows, which are also the NAR's tied classifiers

A new code never seen in the paired clips gets the mean old row of its level. The result is a starting
point for fine-tuning on the new tokens, not a finished model.

Shape letters: Q codebook levels, F frames, K codebook size, H hidden size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_pipeline.loading.token_reader import LoaderStats, read_token_shard


def cooccurrence(old_folder: str | Path, new_folder: str | Path, levels: int, codebook_size: int,
                 max_clips: int | None = None) -> tuple[np.ndarray, int]:
    """Counts [levels, K_new, K_old] of (new code, old code) on the same frame of the same clip -> (counts,
    clips paired). Clips are paired by key across the two token folders' shards of the same name."""
    old_folder, new_folder = Path(old_folder), Path(new_folder)
    counts = np.zeros((levels, codebook_size * codebook_size), dtype=np.int64)
    paired = 0
    shards = sorted(p.name for p in new_folder.glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"{new_folder}: no token shards (*.tar)")
    for name in shards:
        if not (old_folder / name).is_file():
            raise FileNotFoundError(f"{old_folder / name}: the old token folder lacks a shard the new one "
                                    "has; tokenize the same raw shards with both codecs")
        stats = LoaderStats()  # corrupt samples are logged and skipped by the reader, as in training
        old = {u.key: u.codes for u in read_token_shard(str(old_folder / name), stats, levels)}
        for utterance in read_token_shard(str(new_folder / name), stats, levels):
            if utterance.key not in old:
                continue
            old_codes, new_codes = old[utterance.key], utterance.codes
            frames = min(old_codes.shape[1], new_codes.shape[1])
            for q in range(levels):
                pair = new_codes[q, :frames].astype(np.int64) * codebook_size + old_codes[q, :frames]
                counts[q] += np.bincount(pair, minlength=codebook_size * codebook_size)
            paired += 1
            if max_clips is not None and paired >= max_clips:
                return counts.reshape(levels, codebook_size, codebook_size), paired
    if not paired:
        raise ValueError(f"{old_folder} and {new_folder} share no clip keys: nothing to pair")
    return counts.reshape(levels, codebook_size, codebook_size), paired


def remap_rows(old_rows: torch.Tensor, counts: np.ndarray) -> torch.Tensor:
    """old_rows [K_old, H], counts [K_new, K_old] -> new rows [K_new, H]: each new code's rows mixed by how
    often each old code sounded with it; a new code never seen takes the mean old row."""
    weights = torch.from_numpy(counts).to(torch.float64)
    totals = weights.sum(dim=1, keepdim=True)
    mixed = (weights / totals.clamp_min(1.0)) @ old_rows.to(torch.float64)
    unseen = totals[:, 0] == 0
    mixed[unseen] = old_rows.to(torch.float64).mean(dim=0)
    return mixed.to(old_rows.dtype)


def remap_state(state: dict[str, torch.Tensor], counts: np.ndarray, audio_offset: int,
                codebook_size: int) -> dict[str, torch.Tensor]:
    """A copy of an LM state dict with the code tables rebuilt for the new codec (see the module doc)."""
    k = codebook_size
    out = dict(state)
    embed = state["ar.model.embed_tokens.weight"].clone()
    embed[audio_offset: audio_offset + k] = remap_rows(embed[audio_offset: audio_offset + k], counts[0])
    out["ar.model.embed_tokens.weight"] = embed
    head = state["ar.code_head.weight"].clone()
    head[:k] = remap_rows(head[:k], counts[0])
    out["ar.code_head.weight"] = head
    nar = state["nar.code_embed.weight"].clone()
    for q in range(nar.shape[0] // k):
        nar[q * k: (q + 1) * k] = remap_rows(nar[q * k: (q + 1) * k], counts[q])
    out["nar.code_embed.weight"] = nar
    return out


def agreement(counts: np.ndarray) -> list[float]:
    """Per level, the share of frames whose old code is its new code's most frequent old code: how well one
    table predicts the other (1.0 = a relabelling, ~1/K = unrelated)."""
    return [float(c.max(axis=1).sum() / max(c.sum(), 1)) for c in counts]
