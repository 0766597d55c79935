"""Find (audio file, transcript, speaker) items in the layouts speech corpora come in.

Layouts (``detect_format`` picks one for ``auto``):
  folder    audio files of any format libsndfile reads, found recursively, each with a ``.txt`` or ``.lab``
            transcript of the same stem; speaker = parent folder name, unless a manifest found in the tree
            (``transcripts.tsv``, ``manifest.jsonl``, ...) lists the file with a speaker.
  manifest  a CSV / TSV / JSONL / JSON table with an audio path column (file, path, audio, audio_filepath,
            wav, ...), a transcript column (text, transcript, sentence, ...) and optionally a speaker
            column; paths are relative to the manifest's folder.
  ljspeech  ``metadata.csv`` with ``id|text|normalized`` rows and the audio in ``wavs/``.
  libritts  ``speaker/chapter/*.wav`` with ``*.normalized.txt`` (preferred) or ``*.original.txt``.

Discovery never opens audio and never fails on one bad row: a problem found here (missing transcript, bad
manifest row, undecodable text) travels with the item as ``reject`` so ingest writes it to the rejects file.
Transcripts in sidecar files are read later, in the ingest workers (``transcripts.read_transcript_file``);
manifest tables are read by manifest.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.ingest.manifest import (
    AUDIO_COLUMNS,
    MANIFEST_EXTENSIONS,
    MANIFEST_STEMS,
    ManifestRow,
    read_manifest,
)
from data_pipeline.ingest.transcripts import TranscriptError, clean_transcript

log = logging.getLogger(__name__)

FORMATS = ("auto", "folder", "manifest", "ljspeech", "libritts")

# Extensions of containers libsndfile (>= 1.1, so with MP3 and Opus) opens without extra parameters.
AUDIO_EXTENSIONS = frozenset(
    "wav wave flac ogg oga opus mp3 aiff aif aifc au snd caf w64 rf64 voc sph nist htk paf pvf sd2 sds "
    "xi avr iff svx mat wve mpc".split()
)
SIDECAR_EXTENSIONS = (".txt", ".lab")
LIBRITTS_EXTENSIONS = (".normalized.txt", ".original.txt")


@dataclass
class SourceItem:
    """One utterance to ingest. Exactly one of ``text`` / ``text_file`` is set unless ``reject`` is."""

    audio: Path
    speaker: str
    key_hint: str  # a path-like name the shard key is derived from (unique within the corpus)
    text: str | None = None
    text_file: Path | None = None
    reject: tuple[str, str] | None = None  # (reason code, detail) when discovery already found a problem

    @property
    def source(self) -> str:
        return str(self.audio)


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """os.walk in sorted order (deterministic keys and shard contents), skipping hidden folders."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(dirpath), sorted(filenames)


def _first_audio_file(root: Path) -> Path | None:
    for dirpath, filenames in _walk(root):
        for name in filenames:
            if is_audio_file(dirpath / name):
                return dirpath / name
    return None


def _manifests_in(folder: Path) -> list[Path]:
    found = []
    for stem in MANIFEST_STEMS:
        for ext in MANIFEST_EXTENSIONS:
            found += [p for p in folder.glob("*") if p.is_file() and p.name.lower() == stem + ext]
    return found


def _is_ljspeech_metadata(path: Path) -> bool:
    """LJSpeech metadata: no header, ``id|text[|normalized]`` on every line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return False
    fields = first.rstrip("\n").split("|")
    return len(fields) in (2, 3) and fields[0].lower() not in AUDIO_COLUMNS


def detect_format(path: Path) -> str:
    """Guess the layout of ``path`` (a folder or a manifest file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.is_file():
        if path.name.lower() == "metadata.csv" and _is_ljspeech_metadata(path):
            return "ljspeech"
        if path.suffix.lower() in MANIFEST_EXTENSIONS:
            return "manifest"
        raise ValueError(f"cannot tell the format of file {path}: expected a .tsv/.csv/.jsonl/.json manifest")
    meta = path / "metadata.csv"
    if meta.is_file() and (path / "wavs").is_dir() and _is_ljspeech_metadata(meta):
        return "ljspeech"
    if _manifests_in(path):
        return "manifest"
    first = _first_audio_file(path)
    if first is not None and any(first.with_name(first.stem + ext).exists() for ext in LIBRITTS_EXTENSIONS):
        return "libritts"
    return "folder"


def discover(path: Path, fmt: str = "auto", speaker: str | None = None) -> Iterator[SourceItem]:
    """Yield the items of a corpus. ``speaker`` overrides every item's speaker when given."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
        log.info("detected input format: %s", fmt)
    items = {
        "folder": _discover_folder,
        "manifest": _discover_manifest,
        "ljspeech": _discover_ljspeech,
        "libritts": _discover_libritts,
    }[fmt](path)
    for item in items:
        if speaker is not None:
            item.speaker = speaker
        yield item


# ----------------------------------------------------------------------------------------------- folder


def _discover_folder(root: Path) -> Iterator[SourceItem]:
    if not root.is_dir():
        raise NotADirectoryError(f"folder input {root} is not a directory")
    listed: dict[Path, ManifestRow] = {}  # audio files described by manifests found while walking
    for dirpath, filenames in _walk(root):
        for manifest in _manifests_in(dirpath):
            try:
                for row in read_manifest(manifest):
                    listed[row.audio.resolve()] = row
            except ValueError as e:  # an unrelated table that happens to be called metadata.csv
                log.warning("ignoring %s: %s", manifest, e)
        names = set(filenames)
        for name in filenames:
            audio = dirpath / name
            if not is_audio_file(audio):
                continue
            key_hint = audio.relative_to(root).with_suffix("").as_posix()
            row = listed.get(audio.resolve())
            item = SourceItem(audio=audio, speaker=dirpath.name, key_hint=key_hint)
            if row is not None and row.speaker:
                item.speaker = row.speaker
            sidecars = [audio.stem + ext for ext in SIDECAR_EXTENSIONS if audio.stem + ext in names]
            if sidecars:
                item.text_file = dirpath / sidecars[0]
            elif row is not None:
                item.text, item.reject = row.text, row.error
            else:
                item.reject = (
                    "missing_transcript",
                    f"no {'/'.join(SIDECAR_EXTENSIONS)} file next to {audio}",
                )
            yield item


# ----------------------------------------------------------------------------------------------- manifest


def _discover_manifest(path: Path) -> Iterator[SourceItem]:
    if path.is_dir():
        manifests = _manifests_in(path)
        if not manifests:
            raise FileNotFoundError(f"no manifest ({'/'.join(MANIFEST_STEMS)}.tsv/csv/jsonl) in {path}")
        if len(manifests) > 1:
            raise ValueError(f"several manifests in {path}: {manifests}; pass one of them as the input")
        path = manifests[0]
    log.info("reading manifest %s", path)
    for row in read_manifest(path):
        try:
            key_hint = row.audio.relative_to(path.parent).with_suffix("").as_posix()
        except ValueError:  # absolute path elsewhere
            key_hint = row.audio.with_suffix("").name
        yield SourceItem(
            audio=row.audio,
            speaker=row.speaker or row.audio.parent.name,
            key_hint=key_hint,
            text=row.text,
            reject=row.error,
        )


# ----------------------------------------------------------------------------------------------- ljspeech


def _discover_ljspeech(path: Path) -> Iterator[SourceItem]:
    meta = path if path.is_file() else path / "metadata.csv"
    wavs = meta.parent / "wavs"
    with open(meta, encoding="utf-8", errors="surrogateescape") as f:
        for line_num, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("|")
            utt_id = fields[0].strip()
            item = SourceItem(audio=wavs / f"{utt_id}.wav", speaker="LJ", key_hint=utt_id)
            if len(fields) < 2 or not utt_id:
                item.audio = Path(f"{meta}:{line_num}")
                item.reject = ("bad_manifest_row", f"{meta}:{line_num}: expected id|text|normalized")
                yield item
                continue
            # The third column has numbers and abbreviations spelled out by the dataset's authors.
            text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
            try:
                item.text = clean_transcript(text)
            except TranscriptError as e:
                item.reject = (e.reason, f"{meta}:{line_num}: {e.detail}")
            yield item


# ----------------------------------------------------------------------------------------------- libritts


def _discover_libritts(root: Path) -> Iterator[SourceItem]:
    for dirpath, filenames in _walk(root):
        names = set(filenames)
        for name in filenames:
            audio = dirpath / name
            if not is_audio_file(audio):
                continue
            # LibriTTS names are {speaker}_{chapter}_{paragraph}_{sentence}; fall back to the folder layout.
            parts = audio.stem.split("_")
            speaker = parts[0] if len(parts) >= 4 else dirpath.parent.name
            item = SourceItem(audio=audio, speaker=speaker, key_hint=audio.stem)
            sidecars = [audio.stem + ext for ext in LIBRITTS_EXTENSIONS if audio.stem + ext in names]
            if sidecars:
                item.text_file = dirpath / sidecars[0]
            else:
                item.reject = ("missing_transcript", f"no .normalized.txt/.original.txt next to {audio}")
            yield item
