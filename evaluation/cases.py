"""Evaluation lists in seed-tts-eval's format (and F5-TTS's LibriSpeech-PC list), and a same-speaker builder.

One case a line: `id|prompt_text|prompt_wav|target_text[|ground_truth_wav]`, audio paths relative to the list
file (absolute paths are kept). Blank lines and lines starting with `#` are ignored. A 4-field line takes
`wavs/<id>.wav` beside the list as its ground truth when that file exists (seed-tts-eval's test-en layout).
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalCase:
    """One line of an evaluation list, with paths resolved."""

    id: str
    prompt_text: str
    prompt_wav: Path
    target_text: str
    ground_truth_wav: Path | None = None


def _resolve(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(os.path.normpath(base / p))


def read_list(path: str | Path, limit: int | None = None) -> list[EvalCase]:
    """Parse an evaluation list. A malformed line is a configuration error: raise naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: evaluation list not found")
    base = path.parent
    cases: list[EvalCase] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("|")
        if len(fields) not in (4, 5):
            raise ValueError(
                f"{path}:{lineno}: expected 4 or 5 '|'-separated fields "
                f"(id|prompt_text|prompt_wav|target_text[|ground_truth_wav]), got {len(fields)}"
            )
        case_id, prompt_text, prompt_wav, target_text = (f.strip() for f in fields[:4])
        gt = fields[4].strip() if len(fields) == 5 else ""
        if not gt and (base / "wavs" / f"{case_id}.wav").is_file():
            gt = f"wavs/{case_id}.wav"
        if not case_id or not prompt_wav or not target_text:
            raise ValueError(f"{path}:{lineno}: id, prompt_wav and target_text must be non-empty")
        if case_id in seen:
            raise ValueError(f"{path}:{lineno}: duplicate id {case_id!r}")
        seen.add(case_id)
        cases.append(EvalCase(
            id=case_id,
            prompt_text=prompt_text,
            prompt_wav=_resolve(base, prompt_wav),
            target_text=target_text,
            ground_truth_wav=_resolve(base, gt) if gt else None,
        ))
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise ValueError(f"{path}: no cases in evaluation list")
    return cases


def read_librispeech_pc_list(path: str | Path, librispeech_root: str | Path,
                             limit: int | None = None) -> list[EvalCase]:
    """F5-TTS's `librispeech_pc_test_clean_cross_sentence.lst`: tab-separated
    `ref_utt, ref_dur, ref_text, gen_utt, gen_dur, gen_text`; audio is `ROOT/spk/chapter/utt.flac` under a
    LibriSpeech test-clean folder. The prompt is ref_utt, the target (and ground truth) gen_utt."""
    path, root = Path(path), Path(librispeech_root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: evaluation list not found")

    def flac(utt: str) -> Path:
        speaker, chapter, _ = utt.split("-")
        return root / speaker / chapter / f"{utt}.flac"

    cases = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.rstrip("\n").split("\t")
        if len(fields) != 6 or len(fields[0].split("-")) != 3 or len(fields[3].split("-")) != 3:
            raise ValueError(f"{path}:{lineno}: expected 6 tab-separated fields (ref_utt, ref_dur, ref_text, "
                             "gen_utt, gen_dur, gen_text) with speaker-chapter-utterance ids")
        ref_utt, _, ref_text, gen_utt, _, gen_text = (f.strip() for f in fields)
        cases.append(EvalCase(gen_utt, ref_text, flac(ref_utt), gen_text, flac(gen_utt)))
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise ValueError(f"{path}: no cases in evaluation list")
    return cases


def write_list(cases: list[EvalCase], path: str | Path) -> None:
    """Write cases with audio paths relative to the list file (so the list moves with its data)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for c in cases:
        for text in (c.prompt_text, c.target_text):
            if "|" in text or "\n" in text:
                raise ValueError(f"case {c.id}: text may not contain '|' or a newline: {text!r}")
        fields = [c.id, c.prompt_text, os.path.relpath(c.prompt_wav, path.parent), c.target_text]
        if c.ground_truth_wav is not None:
            fields.append(os.path.relpath(c.ground_truth_wav, path.parent))
        lines.append("|".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class _Utterance:
    wav: Path
    speaker: str
    text: str
    duration: float


def _read_transcripts(speech_root: Path) -> list[_Utterance]:
    """All `*/transcripts.tsv` (columns file, speaker, transcript) under speech_root."""
    utts = []
    for tsv in sorted(speech_root.glob("*/transcripts.tsv")):
        with tsv.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                wav = tsv.parent / row["file"]
                text = " ".join(row["transcript"].split()).replace("|", " ")
                if not wav.is_file() or not text:
                    log.warning("skipping %s: missing audio or empty transcript", wav)
                    continue
                utts.append(_Utterance(wav, row["speaker"], text, sf.info(str(wav)).duration))
    return utts


def build_same_speaker_list(speech_root: str | Path, min_prompt_seconds: float = 3.0) -> list[EvalCase]:
    """Every utterance becomes a target whose prompt is another utterance of the same speaker.

    The prompt is the next utterance (in file order, cyclically) at least `min_prompt_seconds` long, or the
    longest other one when none is. The target's own audio is the ground truth. Cases are interleaved across
    speakers so `--limit N` still covers several voices.
    """
    by_speaker: dict[str, list[_Utterance]] = {}
    for u in _read_transcripts(Path(speech_root)):
        by_speaker.setdefault(u.speaker, []).append(u)
    per_speaker: list[list[EvalCase]] = []
    for speaker, utts in sorted(by_speaker.items()):
        if len(utts) < 2:
            log.warning("speaker %s has one utterance: no different-utterance prompt, skipped", speaker)
            continue
        cases = []
        for i, target in enumerate(utts):
            others = [utts[(i + k) % len(utts)] for k in range(1, len(utts))]
            long_enough = [u for u in others if u.duration >= min_prompt_seconds]
            prompt = long_enough[0] if long_enough else max(others, key=lambda u: u.duration)
            cases.append(EvalCase(
                id=f"{speaker}__{target.wav.stem}",
                prompt_text=prompt.text,
                prompt_wav=prompt.wav,
                target_text=target.text,
                ground_truth_wav=target.wav,
            ))
        per_speaker.append(cases)
    interleaved = itertools.chain.from_iterable(itertools.zip_longest(*per_speaker))
    return [c for c in interleaved if c is not None]
