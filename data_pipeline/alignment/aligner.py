"""The forced aligner: a clip and its transcript -> word and phone spans (seconds and codec frames).

    aligner = Aligner.load()                       # models/aligner
    alignment = aligner.align(wav, sample_rate, "The quick brown fox.")

How: the transcript becomes canonical phones (flite's lexicon, g2p.py); every 20 ms frame gets
log-probabilities over the phones from a small classifier (model.py) that reads hama's phoneme posteriors
and a log-mel spectrogram and was trained on exactly timed synthetic speech (scripts/train_aligner.py);
a Viterbi pass (viterbi.py) finds the best monotonic path, with optional pauses between words.

A clip that does not fit its transcript raises `AlignmentError` with a reason code and the score instead
of returning a wrong alignment: an empty transcript, silence, audio too short for the phones, or a path
whose frames the classifier disagrees with (the transcript of another clip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from codec.audio import resample, to_mono
from data_pipeline.alignment.features import FRAME_RATE, HOP, SAMPLE_RATE, frame_features, hama_version
from data_pipeline.alignment.g2p import G2P_NAME, G2PError, transcript_phones
from data_pipeline.alignment.model import ClassifierConfig, FrameClassifier
from data_pipeline.alignment.phones import PAUSE, PAUSE_ID, PHONE_ID, PHONES
from data_pipeline.alignment.schema import Alignment, PhoneSpan, WordSpan
from data_pipeline.alignment.viterbi import forced_align

DEFAULT_ALIGNER = Path(__file__).resolve().parents[2] / "models" / "aligner"
ALIGNER_VERSION = 1


class AlignmentError(ValueError):
    """A clip the aligner cannot fit to its transcript. `reason` is a short code for rejects.jsonl."""

    def __init__(self, reason: str, detail: str, score: float | None = None):
        scored = f" (alignment score {score:.2f})" if score is not None else ""
        super().__init__(f"{reason}: {detail}{scored}")
        self.reason, self.detail, self.score = reason, detail, score


@dataclass
class FitLimits:
    # Mean per-frame gap between the best free labelling and the forced path (nats). Measured with
    # models/aligner: 44 real clips of tests/data/speech with their transcripts 0.11-1.45 (median 0.3);
    # 60 held-out synthetic clips 0.13-1.90 with their own transcript, 3.8-8.1 with another clip's.
    max_gap: float = 2.5
    silence_peak: float = 1e-3  # peak amplitude under which a clip is silence
    min_speech_share: float = 0.05  # frames the classifier hears as speech, at least


class Aligner:
    def __init__(self, model: FrameClassifier, limits: FitLimits | None = None, name: str = ""):
        self.model = model.eval()
        self.limits = limits or FitLimits()
        self.name = name or f"codectts-aligner {ALIGNER_VERSION} (hama {hama_version()}, {G2P_NAME})"

    @classmethod
    def load(cls, path: str | Path = DEFAULT_ALIGNER, limits: FitLimits | None = None) -> Aligner:
        path = Path(path)
        cfg_file, weights = path / "config.json", path / "model.safetensors"
        if not cfg_file.is_file() or not weights.is_file():
            raise FileNotFoundError(f"no aligner in {path}: config.json and model.safetensors are needed "
                                    "(python scripts/train_aligner.py builds one)")
        info = json.loads(cfg_file.read_text())
        model = FrameClassifier(ClassifierConfig(**info["classifier"]))
        model.load_state_dict(load_file(str(weights)))
        limits = limits or FitLimits(**info.get("limits", {}))
        return cls(model, limits)

    def log_probs(self, wav16k: np.ndarray) -> np.ndarray:
        feats = torch.from_numpy(frame_features(wav16k))[None]
        with torch.no_grad():
            return self.model(feats)[0].numpy()

    def align(self, wav: np.ndarray | torch.Tensor, sample_rate: int, text: str) -> Alignment:
        """Audio (mono [T] or [C, T], any rate) + transcript -> Alignment at 50 frames per second."""
        try:
            words = transcript_phones(text)
        except G2PError as e:
            reason = "empty_transcript" if not text.strip() or "no words" in str(e) else "no_pronunciation"
            raise AlignmentError(reason, str(e)) from e
        audio = torch.as_tensor(np.asarray(wav, dtype=np.float32))
        if audio.ndim == 2:
            audio = to_mono(audio)[0] if audio.shape[0] <= 8 else to_mono(audio.T)[0]
        audio = resample(audio[None], sample_rate, SAMPLE_RATE)[0].numpy()
        duration = len(audio) / SAMPLE_RATE
        if len(audio) < HOP or float(np.abs(audio).max()) < self.limits.silence_peak:
            raise AlignmentError("silence", f"{duration:.2f} s of audio with no signal")
        frames = -(-len(audio) // HOP)
        needed = sum(len(w.phones) for w in words)
        if needed > frames:
            raise AlignmentError("audio_too_short", f"{len(words)} words ({needed} phones) cannot fit in "
                                 f"{duration:.2f} s ({frames} frames)")
        log_probs = self.log_probs(audio)
        speech = float((log_probs.argmax(-1) != PAUSE_ID).mean())
        if speech < self.limits.min_speech_share:
            raise AlignmentError("silence", f"no speech heard in {duration:.2f} s "
                                 f"({speech:.0%} of frames sound like speech)")
        try:
            path = forced_align(log_probs, [[PHONE_ID[p] for p in w.phones] for w in words])
        except ValueError as e:
            raise AlignmentError("audio_too_short", str(e)) from e
        score = path.log_likelihood / frames
        gap = float(log_probs.max(-1).mean()) - score
        if gap > self.limits.max_gap:
            raise AlignmentError("poor_fit", f"the audio does not match the transcript {text[:60]!r}: "
                                 f"mean frame gap {gap:.2f} nats > {self.limits.max_gap}", score)
        return self._spans(path, words, frames, duration, score, gap)

    def _spans(self, path, words, frames: int, duration: float, score: float, gap: float) -> Alignment:  # noqa: ANN001
        phones: list[PhoneSpan] = []
        change = np.flatnonzero(np.diff(path.states)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [frames]])
        for a, b in zip(starts, ends, strict=True):
            s = int(path.states[a])
            phones.append(PhoneSpan(PHONES[int(path.state_phone[s])], a / FRAME_RATE,
                                    min(b / FRAME_RATE, duration), int(path.state_word[s])))
        phones[-1].end = duration
        spans = []
        for i, w in enumerate(words):
            mine = [p for p in phones if p.word_index == i and p.phone != PAUSE]
            spans.append(WordSpan(w.word, mine[0].start, mine[-1].end))
        return Alignment(spans, phones, duration, FRAME_RATE, self.name, score=round(score, 4),
                         extra={"fit_gap": round(gap, 4)})
