"""The quality gate a synthetic voice passes before it enters a training corpus.

A voice reads the same gate sentences as every other candidate; Whisper tiny.en transcribes them (corpus WER:
errors over reference words) and DNSMOS OVRL rates them (mean over clips). A voice enters only with both
under / over their bars. Results are kept in a JSON file per corpus, so a resumed build never rescores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from evaluation.asr import WhisperASR, text_word_errors
from evaluation.quality import DNSMOS


@dataclass(frozen=True)
class GateResult:
    voice: str
    clips: int
    audio_seconds: float
    wer: float
    dnsmos: float
    max_wer: float
    min_dnsmos: float
    description: dict

    @property
    def passed(self) -> bool:
        return self.clips > 0 and self.wer <= self.max_wer and self.dnsmos >= self.min_dnsmos

    def reasons(self) -> str:
        out = []
        if self.wer > self.max_wer:
            out.append(f"WER {100 * self.wer:.1f} % > {100 * self.max_wer:.0f} %")
        if self.dnsmos < self.min_dnsmos:
            out.append(f"DNSMOS {self.dnsmos:.2f} < {self.min_dnsmos:.1f}")
        return "; ".join(out) or "passed"


def score_voice(voice: str, clips: list[tuple[Path, str]], asr: WhisperASR, dnsmos: DNSMOS,
                max_wer: float, min_dnsmos: float, description: dict) -> GateResult:
    """`clips`: (audio file, the text it reads)."""
    errors = words = 0
    quality, seconds = [], 0.0
    for path, text in clips:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
        wav = np.asarray(wav, np.float32)
        seconds += len(wav) / sr
        e = text_word_errors(text, asr.transcribe(wav, sr), asr.normalizer)
        errors += e.substitutions + e.deletions + e.insertions
        words += e.ref_words
        quality.append(dnsmos(wav, sr)["ovrl"])
    return GateResult(voice=voice, clips=len(clips), audio_seconds=round(seconds, 2),
                      wer=errors / max(words, 1), dnsmos=float(np.mean(quality)) if quality else 0.0,
                      max_wer=max_wer, min_dnsmos=min_dnsmos, description=description)


class VoiceScorer:
    """What a corpus build calls to gate its voices (data_pipeline.corpus.tts_corpus takes it as a parameter,
    so the data pipeline does not import the evaluation package). The models load on first use."""

    def __init__(self, asr: WhisperASR | None = None, dnsmos: DNSMOS | None = None) -> None:
        self._asr, self._dnsmos = asr, dnsmos

    def score(self, voice: str, clips: list[tuple[Path, str]], max_wer: float, min_dnsmos: float,
              description: dict) -> GateResult:
        if self._asr is None:
            self._asr, self._dnsmos = WhisperASR(), DNSMOS()
        return score_voice(voice, clips, self._asr, self._dnsmos, max_wer, min_dnsmos, description)

    @staticmethod
    def load(path: Path) -> dict[str, GateResult]:
        """Scores saved by an earlier run (a missing file: none)."""
        if not path.is_file():
            return {}
        return {r["voice"]: GateResult(**r) for r in json.loads(path.read_text(encoding="utf-8"))}

    @staticmethod
    def save(results: dict[str, GateResult], path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in results.values()], indent=1), encoding="utf-8")
        tmp.rename(path)

    @staticmethod
    def table(results: list[GateResult]) -> str:
        return gate_table(results)


def _mix(weights: dict) -> str:
    total = sum(weights.values())
    return " + ".join(f"{100 * w / total:.0f}% {name}" for name, w in weights.items())


def gate_table(results: list[GateResult]) -> str:
    """Markdown: one row per voice, passed first, then the rejected with their reasons."""
    rows = ["| voice | timbre | prosody | speed | clips | audio s | WER % | DNSMOS | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (not r.passed, r.wer)):
        d = r.description
        prosody = "same" if d.get("prosody") == d.get("timbre") else _mix(d.get("prosody", {}))
        rows.append(f"| {r.voice} | {_mix(d.get('timbre', {}))} | {prosody} | {d.get('speed', 1.0)} | "
                    f"{r.clips} | {r.audio_seconds:.0f} | {100 * r.wer:.1f} | {r.dnsmos:.2f} | "
                    f"{'pass' if r.passed else 'REJECTED: ' + r.reasons()} |")
    return "\n".join(rows)
