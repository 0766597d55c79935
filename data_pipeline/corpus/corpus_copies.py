"""One perturbed copy of every clip of a corpus folder, as new voices: the loop that speed and channel
perturbation share (`speed_perturb.py`, `channel_perturb.py`; `scripts/perturb_corpus.py`).

A corpus folder is `transcripts.tsv` (file, speaker, transcript) beside the clips and their alignment
sidecars. Each copy gets a new name and speaker name from its perturbation; clips already in the output
folder are kept, so a killed run resumes; the audio is written last, so a clip on disk always has its sidecar.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from data_pipeline.alignment.schema import Alignment, sidecar_path


def stable_hash(text: str) -> int:
    """A 32-bit hash of `text` that is the same in every process and run (Python's hash() is salted), so a
    rerun gives every clip the same perturbation."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class CopyPlan:
    """What one clip becomes: its file name and speaker, the audio transform and the alignment transform."""
    file: str
    speaker: str
    audio: Callable[[np.ndarray, int], np.ndarray]  # (wav, sample rate) -> wav at the same rate
    alignment: Callable[[Alignment], Alignment] = lambda a: a
    detail: float | str = ""  # what the copy differs by (speed factor, channel name), for the caller


@dataclass(frozen=True)
class CopiedClip:
    file: str
    speaker: str
    transcript: str
    detail: float | str


def read_listing(src: Path) -> list[dict[str, str]]:
    listing = src / "transcripts.tsv"
    with open(listing, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"file", "speaker", "transcript"} <= set(rows[0]):
        raise ValueError(f"{listing}: expected a header 'file<TAB>speaker<TAB>transcript' and clips")
    return rows


def copy_corpus(src: Path, dst: Path, plan: Callable[[dict[str, str]], CopyPlan],
                progress=None) -> list[CopiedClip]:  # noqa: ANN001 - an optional tqdm-like wrapper
    """Apply `plan(row)` to every clip listed in `src/transcripts.tsv`, into `dst` (and its own listing).
    Raises ValueError naming the bad listing or clip."""
    rows = read_listing(src)
    dst.mkdir(parents=True, exist_ok=True)
    out: list[CopiedClip] = []
    for row in progress(rows) if progress else rows:
        p = plan(row)
        target = dst / p.file
        if not target.exists():
            try:
                wav, rate = sf.read(src / row["file"], dtype="float32")
            except (OSError, RuntimeError) as e:
                raise ValueError(f"{src / row['file']}: cannot read the clip ({e})") from e
            if wav.ndim > 1:
                wav = wav.mean(axis=1)
            side = sidecar_path(src / row["file"])
            if side.exists():
                moved = p.alignment(Alignment.from_json(json.loads(side.read_text())))
                sidecar_path(target).write_text(json.dumps(moved.to_json()))
            tmp = target.with_name(target.name + ".part")
            sf.write(tmp, p.audio(wav, rate), rate, format="FLAC")
            tmp.rename(target)
        out.append(CopiedClip(p.file, p.speaker, row["transcript"], p.detail))
    with open(dst / "transcripts.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["file", "speaker", "transcript"])
        writer.writerows([c.file, c.speaker, c.transcript] for c in out)
    return out
