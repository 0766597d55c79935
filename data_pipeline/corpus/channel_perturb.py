"""Channel-perturbed copies of a corpus: the same clips as if recorded in other rooms, on other microphones.

Why: the codec's first codebook carries the recording channel as much as the phone. Fitting
P(code 1 | phone) on the clean synthetic corpus and scoring the 44 real clips gives 7.30 nats per frame (a
uniform guess is 6.93); fitted on one channel-perturbed copy of the same corpus it gives 6.68
(`scripts/diagnose_codebook_phones.py`): the real recordings sit in codes that clean synthesis never uses.

Each source speaker gets `channels` pseudo-speakers `{speaker}_ch{k}`; a clip goes to one of them by a hash
of its name, and every clip of a pseudo-speaker goes through that pseudo-speaker's one channel (EQ colour,
room reverb, noise floor, level: `codec.training.augment`, seeded by the pseudo-speaker's name), so a prompt
and its target share their channel as in a real recording. Timings are unchanged (no time warp).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from codec.training.augment import AugmentConfig, augment
from data_pipeline.corpus.corpus_copies import CopiedClip, CopyPlan, copy_corpus, stable_hash

# every channel coloured with probability 0.7, reverberant 0.5, noisy 0.6 (SNR 20-45 dB), any level
CHANNEL = AugmentConfig(speed_prob=0.0, eq_prob=0.7, reverb_prob=0.5, noise_prob=0.6,
                        snr_db_range=(20.0, 45.0))


def apply_channel(wav: np.ndarray, sample_rate: int, channel: str, seed: int = 0,
                  cfg: AugmentConfig = CHANNEL) -> np.ndarray:
    """`wav` through the channel named `channel`: the same name (and seed) always gives the same channel."""
    gen = torch.Generator().manual_seed(stable_hash(f"{seed}:{channel}"))
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None, None]
    return augment(x, sample_rate, cfg, gen)[0, 0].numpy()


def channel_corpus_dir(src: Path, dst: Path, channels: int = 5, seed: int = 0,
                       progress=None) -> list[CopiedClip]:  # noqa: ANN001 - an optional tqdm-like wrapper
    """One channel-perturbed copy of every clip of the corpus folder `src` into `dst`, its alignment sidecar
    copied as it is; `detail` of each returned clip is its channel (= its speaker name). Raises ValueError
    naming the bad file."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")

    def plan(row: dict[str, str]) -> CopyPlan:
        k = stable_hash(f"{seed}:{row['file']}") % channels
        speaker = f"{row['speaker']}_ch{k}"
        return CopyPlan(file=f"{row['file'].rsplit('.', 1)[0]}_ch{k}.flac", speaker=speaker,
                        audio=lambda wav, rate: apply_channel(wav, rate, speaker, seed), detail=speaker)

    return copy_corpus(src, dst, plan, progress)
