"""Token shards on disk: their names, the members of one token sample, and tar files written atomically.

A token sample is `{key}.codes.npy` (int16/int32 [Q, F]) + `{key}.json` (`records.TokenMeta`), plus
`{key}.align.json` when the clip has a phone alignment (with the frames per phone at the codec's frame rate).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from webdataset.writer import TarWriter

from data_pipeline.alignment.schema import Alignment
from data_pipeline.records import ALIGN_EXT, CODES_EXT, META_EXT, TokenMeta

TMP_SUFFIX = ".tmp"


def token_shard_name(raw_name: str) -> str:
    """`raw-000012.tar` -> `tokens-000012.tar`; other names are kept."""
    return "tokens-" + raw_name[len("raw-"):] if raw_name.startswith("raw-") else raw_name


def codes_dtype(codebook_size: int) -> np.dtype:
    return np.dtype(np.int16) if codebook_size <= 32768 else np.dtype(np.int32)


def alignment_member(alignment: Alignment, frame_rate: float, num_frames: int) -> bytes:
    """`{key}.align.json` of a token shard: the alignment at the codec's frame rate, with the frames per
    phone (`frame_durations`, summing to `num_frames`) and the canonical phone ids."""
    alignment.frame_rate = float(frame_rate)
    record = alignment.to_json()
    record.update(num_frames=int(num_frames), phone_ids=alignment.phone_ids().tolist(),
                  frame_durations=alignment.frame_durations(num_frames).tolist())
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def token_sample(key: str, codes: np.ndarray, meta: TokenMeta, align: bytes | None = None) -> dict:
    """The tar members of one token sample: `{key}.codes.npy` + `{key}.json` (+ `{key}.align.json`)."""
    if codes.ndim != 2 or codes.shape != (meta.num_codebooks, meta.num_frames):
        raise ValueError(f"{key}: codes {codes.shape} disagree with metadata "
                         f"({meta.num_codebooks}, {meta.num_frames})")
    buf = io.BytesIO()
    np.save(buf, codes, allow_pickle=False)
    sample = {"__key__": key, CODES_EXT: buf.getvalue(),
              META_EXT: json.dumps(asdict(meta), ensure_ascii=False).encode("utf-8")}
    if align is not None:
        sample[ALIGN_EXT] = align
    return sample


def write_tar(path: Path, samples: Iterable[dict]) -> int:
    """Write tar samples to `path`, flushed to disk; returns the sample count."""
    count = 0
    with open(path, "wb") as f:
        with TarWriter(f, encoder=False, mtime=0) as writer:
            for sample in samples:
                writer.write(sample)
                count += 1
        f.flush()
        os.fsync(f.fileno())
    return count


def write_shard_atomically(path: Path, samples: Iterable[dict]) -> int:
    """Write tar samples to `path` via `path.tmp` + rename, so readers never see half a shard."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    count = write_tar(tmp, samples)
    os.replace(tmp, path)
    return count

