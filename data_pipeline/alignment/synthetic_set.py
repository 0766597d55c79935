"""Exactly timed synthetic speech for training and measuring the aligner.

`TRAIN_VOICES` are the TTS corpus's own engines and settings; `HELDOUT_VOICES` are other flite voices and
espeak-ng languages / variants at speeds outside the training range, reading sentences from the other end
of the sentence file. The aligner's figures (scripts/bench_align.py) are measured on the held-out half.
Each example: frame features, frame labels (the canonical phone at each frame's centre), the exact
alignment, the text and how it was made.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_pipeline.alignment.features import FRAME_RATE, SAMPLE_RATE, frame_features, num_frames
from data_pipeline.alignment.phones import PHONE_ID
from data_pipeline.alignment.schema import Alignment
from data_pipeline.corpus.synthetic_speech import SynthJob, synthesize


@dataclass(frozen=True)
class Voice:
    engine: str  # "flite" | "espeak-ng"
    voice: str
    speed: float  # flite duration stretch (>1 slower); espeak words per minute
    pitch: float  # flite mean f0 (Hz); espeak pitch 0-99

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}@{self.speed:g}"


TRAIN_VOICES: tuple[Voice, ...] = tuple(
    [Voice("flite", v, s, f) for v, f in (("slt", 170), ("rms", 100), ("awb", 120)) for s in (0.9, 1.0, 1.15)]
    + [Voice("espeak-ng", v, s, p) for v, p in (("en-us", 50), ("en-us+f3", 60), ("en-gb+m3", 40),
                                                ("en-gb-x-rp+f2", 55), ("en-us+m7", 35),
                                                ("en-gb-scotland+f4", 65)) for s in (150, 170, 190)]
)
HELDOUT_VOICES: tuple[Voice, ...] = tuple(
    [Voice("flite", v, s, f) for v, f in (("kal16", 105), ("kal", 110)) for s in (0.8, 1.3)]
    + [Voice("espeak-ng", v, s, p) for v, p in (("en-029+m5", 45), ("en-gb-x-gbclan+f5", 60),
                                                ("en-us-nyc+m2", 40)) for s in (125, 215)]
)


def synthesize_timed(text: str, voice: Voice) -> tuple[np.ndarray, Alignment]:
    """16 kHz float32 audio, made exactly as the corpus builder makes its clips (silence trimmed to 0.1 s
    margins, peak-normalised), + its exact alignment at the codec's frame rate."""
    job = SynthJob("aligner", voice.engine, voice.voice, text, voice.speed, voice.pitch)
    wav, alignment = synthesize(job, SAMPLE_RATE)
    alignment.frame_rate = FRAME_RATE
    return wav.numpy(), alignment


def frame_labels(alignment: Alignment, frames: int) -> np.ndarray:
    """[frames] canonical phone id at each frame's centre."""
    centres = (np.arange(frames) + 0.5) / alignment.frame_rate
    ends = np.array([p.end for p in alignment.phones])
    idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(ends) - 1)
    return np.array([PHONE_ID[alignment.phones[i].phone] for i in idx], dtype=np.int64)


@dataclass(frozen=True)
class Job:
    text: str
    voice: Voice


def plan(sentences: Sequence[str], voices: Sequence[Voice], count: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    return [Job(rng.choice(sentences), rng.choice(voices)) for _ in range(count)]


def _make(job: Job) -> dict | None:
    try:
        wav, alignment = synthesize_timed(job.text, job.voice)
        feats = frame_features(wav)
    except Exception as e:  # noqa: BLE001 - one bad sentence must not stop a data build
        return {"error": f"{job.voice.name}: {type(e).__name__}: {e}"}
    return {"features": feats.astype(np.float16), "labels": frame_labels(alignment, len(feats)),
            "meta": {"text": job.text, "voice": asdict(job.voice), "alignment": alignment.to_json()}}


def build_set(jobs: Sequence[Job], out: Path, workers: int = 2) -> int:
    """Synthesise + featurise `jobs` into `out` (features.npy, labels.npy, offsets.npy, meta.jsonl).
    A finished set (meta.jsonl present) is kept."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "meta.jsonl").is_file():
        return sum(1 for _ in open(out / "meta.jsonl"))
    feats, labels, metas = [], [], []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for r in tqdm(pool.map(_make, jobs, chunksize=8), total=len(jobs), desc=f"aligner set {out.name}"):
            if r is None or "error" in r:
                tqdm.write(f"skipped: {r['error'] if r else 'unknown'}")
                continue
            feats.append(r["features"])
            labels.append(r["labels"])
            metas.append(r["meta"])
    offsets = np.cumsum([0] + [len(f) for f in feats])
    np.save(out / "features.npy", np.concatenate(feats))
    np.save(out / "labels.npy", np.concatenate(labels))
    np.save(out / "offsets.npy", offsets)
    tmp = out / "meta.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in metas), encoding="utf-8")
    tmp.rename(out / "meta.jsonl")
    return len(metas)


def load_set(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    feats = np.load(path / "features.npy", mmap_mode="r")
    labels = np.load(path / "labels.npy")
    offsets = np.load(path / "offsets.npy")
    metas = [json.loads(line) for line in open(path / "meta.jsonl", encoding="utf-8")]
    for i, meta in enumerate(metas):
        a, b = offsets[i], offsets[i + 1]
        yield np.asarray(feats[a:b], dtype=np.float32), labels[a:b], meta


def frames_of(seconds: float) -> int:
    return num_frames(int(round(seconds * SAMPLE_RATE)))


def split_sentences(sentences: Sequence[str], heldout: int = 1000) -> tuple[list[str], list[str]]:
    """A fixed seeded split: the aligner trains on the first part and is measured on the last `heldout`."""
    order = list(sentences)
    random.Random(0).shuffle(order)
    return order[:-heldout], order[-heldout:]
