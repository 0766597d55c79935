"""The text a tokenizer is trained on: the transcripts of shards, of a manifest or of a plain text file."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from data_pipeline.ingest.manifest import MANIFEST_EXTENSIONS, read_manifest
from data_pipeline.records import META_EXT


def _shard_texts(shard: Path) -> Iterator[str]:
    """Transcripts from the ``{key}.json`` members of a raw or token shard, without decoding any audio."""
    with tarfile.open(shard) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("." + META_EXT):
                meta = json.load(tar.extractfile(member))
                if isinstance(meta, dict) and isinstance(meta.get("text"), str):
                    yield meta["text"]


def iter_transcripts(path: str | Path) -> Iterator[str]:
    """Transcripts from a folder of shards (.tar, searched recursively), one shard, a manifest
    (.tsv/.csv/.jsonl/.json with a transcript column) or a plain text file (one transcript per line)."""
    path = Path(path)
    if path.is_dir():
        shards = sorted(path.rglob("*.tar"))
        if not shards:
            raise FileNotFoundError(f"no .tar shards under {path}")
        for shard in shards:
            yield from _shard_texts(shard)
    elif path.suffix == ".tar":
        yield from _shard_texts(path)
    elif path.suffix.lower() in MANIFEST_EXTENSIONS:
        for row in read_manifest(path):
            if row.text:
                yield row.text
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    yield line.strip()
