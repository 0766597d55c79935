"""Active speech level: how loud the speech in a clip is, ignoring its pauses; and scaling a clip to a level.

Why it matters: a codec's first codebook carries the level as much as the words (a 6 dB gain change leaves
only ~46 % of `models/codec_rvq16k`'s level-1 codes unchanged, README "Why real voices fail"), so a prompt
much quieter or louder than the training speech reads to the LM as an unfamiliar voice.

The level is a simplified ITU-T P.56: the mean power of the 20 ms frames that hold speech, in dB relative to a
full-scale square wave (a full-scale sine reads -3 dB). A frame holds speech when its power is within
`ACTIVE_RANGE_DB` of the clip's loud frames (95th percentile) and above an absolute floor, so room noise in
the pauses neither lowers the level (as a plain RMS over the clip would) nor counts as speech.
"""

from __future__ import annotations

import math

import torch

FRAME_SECONDS = 0.02
ACTIVE_RANGE_DB = 35.0  # frames this far below the loud frames are pauses
FLOOR_DB = -70.0  # digital silence and dither never count as speech
LOUD_QUANTILE = 0.95


def active_level_db(wav: torch.Tensor, sample_rate: int) -> float:
    """Active speech level of mono audio ([T] or [1, T], float in [-1, 1]) in dB; -inf for a silent clip."""
    x = wav.detach().float().reshape(-1)
    hop = max(1, round(FRAME_SECONDS * sample_rate))
    if x.numel() < hop:
        x = torch.nn.functional.pad(x, (0, hop - x.numel()))
    frames = x[: x.numel() // hop * hop].reshape(-1, hop)
    power = frames.pow(2).mean(dim=1)
    power_db = 10 * torch.log10(power.clamp_min(1e-12))
    loud = torch.quantile(power_db, LOUD_QUANTILE)
    active = (power_db > loud - ACTIVE_RANGE_DB) & (power_db > FLOOR_DB)
    if not bool(active.any()):
        return -math.inf
    return float(10 * torch.log10(power[active].mean()))


def scale_to_level(wav: torch.Tensor, sample_rate: int, target_db: float, peak: float = 0.99
                   ) -> tuple[torch.Tensor, float]:
    """Scale `wav` so its active level is `target_db`, never past `peak` -> (scaled wav, gain in dB applied).

    A silent clip comes back unchanged (gain 0). Where the target gain would clip, the gain stops at `peak`:
    a clipped prompt would be a worse mismatch than a quiet one.
    """
    level = active_level_db(wav, sample_rate)
    if not math.isfinite(level):
        return wav, 0.0
    gain_db = target_db - level
    top = float(wav.abs().max())
    if top > 0:
        gain_db = min(gain_db, 20 * math.log10(peak / top))
    return wav * (10 ** (gain_db / 20)), gain_db
