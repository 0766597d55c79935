"""What an alignment is: word and phone spans in seconds, and the same phones as whole codec frames.

`Alignment` is what `scripts/align.py` writes and what every token shard carries as `{key}.align.json`
(with `frame_durations` added for the shard's frame rate). Phones tile the clip without gaps: silence is
an explicit `pau` phone with `word_index` -1, so the frames per phone sum exactly to the clip's frames.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_pipeline.alignment.phones import PAUSE, PHONE_ID


@dataclass
class WordSpan:
    word: str
    start: float  # seconds
    end: float


@dataclass
class PhoneSpan:
    phone: str  # a name in data_pipeline.alignment.phones.PHONES
    start: float
    end: float
    word_index: int  # index into Alignment.words; -1 for a pause between words
    exact: bool = True  # False: the start is an estimate (a synthesiser phone split into two canonical ones)


@dataclass
class Alignment:
    words: list[WordSpan]
    phones: list[PhoneSpan]
    duration: float  # seconds of audio the spans tile
    frame_rate: float  # codec frames per second the frame view uses
    aligner: str  # "flite-2.2 exact", "espeak-ng-1.51 exact", "codectts-aligner 1 (hama 1.7.0)", ...
    score: float | None = None  # mean per-frame log-likelihood of the path (aligner only)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> Alignment:
        return Alignment(words=[WordSpan(**w) for w in d["words"]],
                         phones=[PhoneSpan(**p) for p in d["phones"]], duration=float(d["duration"]),
                         frame_rate=float(d["frame_rate"]), aligner=d["aligner"], score=d.get("score"),
                         extra=d.get("extra", {}))

    def phone_ids(self) -> np.ndarray:
        return np.array([PHONE_ID[p.phone] for p in self.phones], dtype=np.int64)

    def frame_durations(self, num_frames: int) -> np.ndarray:
        """Frames per phone at `frame_rate`, summing exactly to `num_frames`; every phone gets at least one
        frame when there are at least as many frames as phones (a 10 ms phone still exists for an LM)."""
        n = len(self.phones)
        if n == 0:
            raise ValueError("an alignment with no phones has no frame view")
        scale = num_frames / self.duration if self.duration > 0 else 0.0
        bounds = np.array([0] + [round(p.end * scale) for p in self.phones[:-1]] + [num_frames])
        bounds = np.clip(bounds, 0, num_frames)
        if n <= num_frames:
            for i in range(1, n):
                bounds[i] = max(bounds[i], bounds[i - 1] + 1)
            for i in range(n - 1, 0, -1):
                bounds[i] = min(bounds[i], bounds[i + 1] - 1)
        else:
            bounds = np.maximum.accumulate(bounds)
        return np.diff(bounds).astype(np.int64)

    def frame_phone_ids(self, num_frames: int) -> np.ndarray:
        """[num_frames] canonical phone id sounding at each frame."""
        return np.repeat(self.phone_ids(), self.frame_durations(num_frames))

    def shifted(self, offset: float, duration: float) -> Alignment:
        """The same spans on audio cut at `offset` seconds and `duration` long (spans clipped, empty ones
        dropped, the gaps this leaves at the ends filled with pauses)."""
        def clip(t: float) -> float:
            return min(max(t - offset, 0.0), duration)
        phones = [PhoneSpan(p.phone, clip(p.start), clip(p.end), p.word_index, p.exact) for p in self.phones]
        phones = [p for p in phones if p.end > p.start]
        words = [WordSpan(w.word, clip(w.start), clip(w.end)) for w in self.words]
        return Alignment(words, fill_pauses(phones, duration), duration, self.frame_rate, self.aligner,
                         self.score, dict(self.extra))


def fill_pauses(phones: list[PhoneSpan], duration: float) -> list[PhoneSpan]:
    """Contiguous spans from 0 to `duration`: gaps become pauses, neighbouring pauses merge."""
    out: list[PhoneSpan] = []
    t = 0.0
    for p in phones + [PhoneSpan(PAUSE, duration, duration, -1)]:
        if p.start > t + 1e-6:
            out.append(PhoneSpan(PAUSE, t, p.start, -1))
        if p.end > p.start:
            out.append(PhoneSpan(p.phone, max(p.start, t), p.end, p.word_index, p.exact))
        t = max(t, p.end)
    merged: list[PhoneSpan] = []
    for p in out:
        if merged and p.phone == PAUSE and merged[-1].phone == PAUSE:
            merged[-1].end = p.end
        else:
            merged.append(p)
    return merged


def sidecar_path(audio_path: Path) -> Path:
    """Where a clip's alignment lives beside it: `x.flac` -> `x.align.json`."""
    return audio_path.with_name(audio_path.name.rsplit(".", 1)[0] + ".align.json")


_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")


def transcript_words(normalised: str) -> list[tuple[str, int, int]]:
    """Whitespace words of a normalised transcript with edge punctuation removed -> (word, start, end)
    character offsets into `normalised`; tokens with no letter or digit are not words."""
    words = []
    for m in re.finditer(r"\S+", normalised):
        inner = _EDGE_PUNCT.sub("", m.group(0)).strip("'")
        if not any(c.isalnum() for c in inner):
            continue
        start = m.start() + m.group(0).find(inner)
        words.append((inner, start, start + len(inner)))
    return words


def speakable_text(normalised: str) -> str:
    """The text handed to a synthesiser: whitespace tokens with a letter or digit, punctuation attached
    ("cats -- well" -> "cats well"), so its character positions are the words' positions."""
    return " ".join(t for t in normalised.split() if any(c.isalnum() for c in t))
