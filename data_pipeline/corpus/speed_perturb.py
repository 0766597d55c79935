"""Speed-perturbed copies of a corpus: more voices from the same clips (Ko et al., Interspeech 2015).

A clip resampled by a factor f plays f times faster, its pitch and formants f times higher: to a codec LM it
is another speaker, reading at another pace. `scripts/diagnose_stages.py` on real voices the LM never heard
found the phone -> code mapping itself failing (teacher-forced AR 76 % WER on them vs 44 % on its training
voices): with a dozen voices it learned a dozen mappings. Each copy gets its own speaker name
(`{speaker}_sp{f}`), so prompts pair within one perturbed voice, and its exact phone timings scaled by 1 / f.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from data_pipeline.alignment.schema import Alignment
from data_pipeline.corpus.corpus_copies import CopiedClip, CopyPlan, copy_corpus, stable_hash

DEFAULT_FACTORS = (0.88, 0.94, 1.06, 1.12, 1.18)


def pick_factor(name: str, factors: tuple[float, ...], seed: int) -> float:
    """The factor of one clip: a hash of its name and the seed, so a rerun picks the same one."""
    return factors[stable_hash(f"{seed}:{name}") % len(factors)]


def perturb(wav: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """`wav` played `factor` times faster (pitch and formants `factor` times higher), same sample rate."""
    source_rate = int(round(sample_rate * factor))
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), source_rate, sample_rate)
    return out.numpy()


def scale_alignment(alignment: Alignment, factor: float) -> Alignment:
    """Every time of `alignment` divided by `factor` (the clip now lasts duration / factor)."""
    d = alignment.to_json()
    for span in d["words"] + d["phones"]:
        span["start"] /= factor
        span["end"] /= factor
    d["duration"] /= factor
    d["extra"] = {**d.get("extra", {}), "speed_perturbed": factor}
    return Alignment.from_json(d)


def perturb_corpus_dir(src: Path, dst: Path, factors: tuple[float, ...] = DEFAULT_FACTORS, seed: int = 0,
                       progress=None) -> list[CopiedClip]:  # noqa: ANN001 - an optional tqdm-like wrapper
    """One speed-perturbed copy of every clip of the corpus folder `src` into `dst`, its alignment sidecar
    scaled; `detail` of each returned clip is its factor. Raises ValueError naming the bad file."""

    def plan(row: dict[str, str]) -> CopyPlan:
        factor = pick_factor(row["file"], factors, seed)
        return CopyPlan(file=f"{row['file'].rsplit('.', 1)[0]}_sp{factor:.2f}.flac",
                        speaker=f"{row['speaker']}_sp{factor:.2f}",
                        audio=lambda wav, rate: perturb(wav, rate, factor),
                        alignment=lambda a: scale_alignment(a, factor), detail=factor)

    return copy_corpus(src, dst, plan, progress)
