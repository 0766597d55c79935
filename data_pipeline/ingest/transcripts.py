"""Transcripts at the door: a transcript that cannot be used raises `TranscriptError` with its reject reason.

Shared by discovery (sources.py, manifest.py: transcripts in tables) and the ingest workers (sidecar files,
read there with ``read_transcript_file`` so discovery never opens more than the listing).
"""

from __future__ import annotations

from pathlib import Path


class TranscriptError(ValueError):
    """A transcript that cannot be used; ``reason`` is the reject code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def clean_transcript(text: str) -> str:
    """Collapse whitespace and check the text is usable; raises TranscriptError."""
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text):  # surrogateescape marks bytes that were not UTF-8
        raise TranscriptError("bad_transcript_encoding", "transcript is not valid UTF-8")
    text = " ".join(text.split())
    if not text:
        raise TranscriptError("empty_transcript", "transcript is empty")
    if not any(ch.isalnum() for ch in text):
        raise TranscriptError("empty_transcript", f"transcript has no letters or digits: {text[:50]!r}")
    return text


def read_transcript_file(path: Path) -> str:
    """Read a sidecar transcript (UTF-8, optional BOM); raises TranscriptError."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TranscriptError("missing_transcript", f"cannot read transcript {path}: {e}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TranscriptError("bad_transcript_encoding", f"transcript {path} is not valid UTF-8: {e}") from e
    return clean_transcript(text)
