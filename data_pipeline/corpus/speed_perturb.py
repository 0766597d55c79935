"""Speed-perturbed copies of a corpus: more voices from the same clips (Ko et al., Interspeech 2015).

A clip resampled by a factor f plays f times faster, its pitch and formants f times higher: to a codec LM it
is another speaker, reading at another pace. `scripts/diagnose_stages.py` on real voices the LM never heard
found the phone -> code mapping itself failing (teacher-forced AR 76 % WER on them vs 44 % on its training
voices): with a dozen voices it learned a dozen mappings. Each copy gets its own speaker name
(`{speaker}_sp{f}`), so prompts pair within one perturbed voice, and its exact phone timings scaled by 1 / f.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from data_pipeline.alignment.schema import Alignment, sidecar_path

DEFAULT_FACTORS = (0.88, 0.94, 1.06, 1.12, 1.18)


@dataclass(frozen=True)
class PerturbedClip:
    file: str
    speaker: str
    transcript: str
    factor: float


def pick_factor(name: str, factors: tuple[float, ...], seed: int) -> float:
    """The factor of one clip: a hash of its name and the seed, so a rerun picks the same one."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return factors[int.from_bytes(digest[:4], "little") % len(factors)]


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
                       progress=None) -> list[PerturbedClip]:  # noqa: ANN001 - an optional tqdm-like wrapper
    """One perturbed copy of every clip listed in `src/transcripts.tsv` (file, speaker, transcript) into
    `dst`, with its scaled alignment sidecar when the source has one, and `dst/transcripts.tsv`. Clips already
    in `dst` are kept (a killed run resumes). Raises FileNotFoundError / ValueError naming the bad file."""
    listing = src / "transcripts.tsv"
    with open(listing, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"file", "speaker", "transcript"} <= set(rows[0]):
        raise ValueError(f"{listing}: expected a header 'file<TAB>speaker<TAB>transcript' and clips")
    dst.mkdir(parents=True, exist_ok=True)
    out: list[PerturbedClip] = []
    for row in progress(rows) if progress else rows:
        factor = pick_factor(row["file"], factors, seed)
        stem = row["file"].rsplit(".", 1)[0]
        name = f"{stem}_sp{factor:.2f}.flac"
        target = dst / name
        if not target.exists():
            try:
                wav, rate = sf.read(src / row["file"], dtype="float32")
            except (OSError, RuntimeError) as e:
                raise ValueError(f"{src / row['file']}: cannot read the clip ({e})") from e
            if wav.ndim > 1:
                wav = wav.mean(axis=1)
            side = sidecar_path(src / row["file"])
            if side.exists():
                scaled = scale_alignment(Alignment.from_json(json.loads(side.read_text())), factor)
                sidecar_path(target).write_text(json.dumps(scaled.to_json()))
            tmp = target.with_name(target.name + ".part")
            sf.write(tmp, perturb(wav, rate, factor), rate, format="FLAC")
            tmp.rename(target)  # the audio last: a clip on disk always has its sidecar
        out.append(PerturbedClip(name, f"{row['speaker']}_sp{factor:.2f}", row["transcript"], factor))
    with open(dst / "transcripts.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["file", "speaker", "transcript"])
        writer.writerows([c.file, c.speaker, c.transcript] for c in out)
    return out
