"""Manifest tables: a CSV / TSV / JSONL / JSON file listing audio paths with their transcripts (and speakers).

A manifest has an audio path column (file, path, audio, audio_filepath, wav, ...), a transcript column (text,
transcript, sentence, ...) and optionally a speaker column; paths are relative to the manifest's folder. One
bad row never fails the file: its problem travels with the row as ``error`` (a reject reason and detail).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.ingest.transcripts import TranscriptError, clean_transcript

MANIFEST_STEMS = ("transcripts", "manifest", "metadata")
MANIFEST_EXTENSIONS = (".tsv", ".csv", ".jsonl", ".json")

# Column names accepted in manifests, in order of preference (lower-cased header names are compared).
AUDIO_COLUMNS = (
    "file",
    "path",
    "audio",
    "audio_path",
    "audio_filepath",
    "wav",
    "wav_path",
    "filename",
    "file_name",
)
TEXT_COLUMNS = (
    "text",
    "transcript",
    "transcription",
    "sentence",
    "normalized_text",
    "raw_text",
    "normalized",
)
SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk", "spk_id", "speaker_name", "client_id")


@dataclass
class ManifestRow:
    audio: Path
    text: str | None
    speaker: str | None
    line: int
    error: tuple[str, str] | None = None


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {c.lower().strip(): c for c in columns if c is not None}
    return next((lower[w] for w in wanted if w in lower), None)


def _resolve_audio(base: Path, name: str) -> Path:
    """Path of a manifest's audio entry: relative to the manifest's folder, or (Common Voice, LJSpeech-style
    tables) to its clips/, wavs/ or audio/ subfolder; an id without extension may mean .wav or .flac."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    for folder in (base, base / "clips", base / "wavs", base / "audio"):
        for candidate in (
            folder / path,
            *(folder / (name + ext) for ext in (".wav", ".flac") if not path.suffix),
        ):
            if candidate.exists():
                return candidate
    return base / path


def _manifest_records(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number, record dict or None, parse error) for every row of a manifest."""
    suffix = path.suffix.lower()
    # surrogateescape: an undecodable byte fails only its own row (checked in clean_transcript), not the file.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        if suffix == ".json":
            try:
                records = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"manifest {path} is not valid JSON: {e}") from e
            if not isinstance(records, list):
                raise ValueError(f"manifest {path}: expected a JSON list of objects")
            for i, rec in enumerate(records, 1):
                yield (i, rec, None) if isinstance(rec, dict) else (i, None, "entry is not a JSON object")
            return
        if suffix == ".jsonl":
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    yield i, None, f"invalid JSON: {e}"
                    continue
                yield (i, rec, None) if isinstance(rec, dict) else (i, None, "line is not a JSON object")
            return
        if suffix == ".tsv":  # TSV transcripts hold bare quotes ('"lower-case" letters'): no CSV quoting
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            sample = f.read(65536)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",|;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(f, dialect=dialect)
        for rec in reader:
            yield reader.line_num, rec, None


def read_manifest(path: Path) -> Iterator[ManifestRow]:
    """Rows of a CSV/TSV/JSONL/JSON manifest. Raises ValueError only when the file as a whole is unusable."""
    path = Path(path)
    base = path.parent
    audio_col = text_col = speaker_col = None
    for line, rec, error in _manifest_records(path):
        if rec is not None and audio_col is None:
            columns = list(rec.keys())
            audio_col, text_col = _pick(columns, AUDIO_COLUMNS), _pick(columns, TEXT_COLUMNS)
            speaker_col = _pick(columns, SPEAKER_COLUMNS)
            if audio_col is None or text_col is None:
                raise ValueError(
                    f"manifest {path}: no audio-path or transcript column in {columns}; "
                    f"expected one of {AUDIO_COLUMNS} and one of {TEXT_COLUMNS}"
                )
        where = f"{path}:{line}"
        if error is not None:
            yield ManifestRow(Path(where), None, None, line, ("bad_manifest_row", f"{where}: {error}"))
            continue
        name, text = rec.get(audio_col), rec.get(text_col)
        if not isinstance(name, str) or not name.strip():
            yield ManifestRow(Path(where), None, None, line, ("bad_manifest_row", f"{where}: no audio path"))
            continue
        speaker = rec.get(speaker_col) if speaker_col else None
        row = ManifestRow(_resolve_audio(base, name.strip()), None, None, line)
        row.speaker = str(speaker).strip() if speaker not in (None, "") else None
        if not isinstance(text, str):
            row.error = ("empty_transcript", f"{where}: no transcript")
        else:
            try:
                row.text = clean_transcript(text)
            except TranscriptError as e:
                row.error = (e.reason, f"{where}: {e.detail}")
        yield row

