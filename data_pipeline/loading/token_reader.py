"""Token shards -> `Utterance`s: one sample decoded and checked, one shard streamed, and the counters of
what was read and why anything was dropped (`LoaderStats`).

Corrupt samples (unreadable tar members, bad JSON / npy, shapes that disagree with the metadata) are
logged with the shard URL and key, counted in `stats`, and skipped; the run goes on.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import numpy as np
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from data_pipeline.alignment.phones import PHONES
from data_pipeline.loading.batching import Utterance
from data_pipeline.records import ALIGN_EXT, CODES_EXT, META_EXT

log = logging.getLogger(__name__)


@dataclass
class LoaderStats:
    """Counters of what the loader read and why it dropped anything."""

    samples: int = 0  # utterances read from shards
    batches: int = 0
    corrupt: int = 0  # unreadable / inconsistent samples or shard errors
    too_short: int = 0
    too_long: int = 0

    def __add__(self, other: LoaderStats) -> LoaderStats:
        return LoaderStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})



def decode_token_sample(sample: dict, num_codebooks: int | None = None) -> Utterance:
    """A tar sample (`{key}.codes.npy` + `{key}.json` bytes) -> Utterance; a ValueError says what is wrong."""
    for ext in (CODES_EXT, META_EXT):
        if ext not in sample:
            raise ValueError(f"missing .{ext}")
    try:
        meta = json.loads(sample[META_EXT])
        codes = np.load(io.BytesIO(sample[CODES_EXT]), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt sample
        raise ValueError(f"cannot parse: {exc}") from exc
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be an integer [Q, F] array, got {codes.dtype} {codes.shape}")
    if codes.shape != (meta.get("num_codebooks"), meta.get("num_frames")):
        raise ValueError(f"codes shape {codes.shape} != metadata (num_codebooks={meta.get('num_codebooks')}, "
                         f"num_frames={meta.get('num_frames')})")
    frame_rate = float(meta.get("frame_rate", 0))
    if frame_rate <= 0 or codes.shape[1] == 0:
        raise ValueError(f"bad frame_rate {frame_rate} or empty codes")
    codebook_size = meta.get("extra", {}).get("codebook_size")
    if codes.min() < 0 or (codebook_size and codes.max() >= codebook_size):
        raise ValueError(f"codes outside [0, {codebook_size}): min {codes.min()}, max {codes.max()}")
    if num_codebooks is not None:
        if codes.shape[0] < num_codebooks:
            raise ValueError(f"{codes.shape[0]} codebooks, the loader needs {num_codebooks}")
        codes = codes[:num_codebooks]
    phone_ids, durations = (None, None)
    if ALIGN_EXT in sample:
        phone_ids, durations = decode_alignment(sample[ALIGN_EXT], codes.shape[1])
    return Utterance(key=sample["__key__"], speaker=str(meta.get("speaker") or ""), text=str(meta["text"]),
                     codes=codes, frame_rate=frame_rate, url=sample.get("__url__", ""),
                     phone_ids=phone_ids, phone_durations=durations)


def decode_alignment(data: bytes, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """`{key}.align.json` of a token shard -> (phone ids [P], frames per phone [P]); a ValueError says what
    is wrong (the frames must sum to the clip's frame count)."""
    try:
        record = json.loads(data)
        phone_ids = np.asarray(record["phone_ids"], dtype=np.int64)
        durations = np.asarray(record["frame_durations"], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt sample
        raise ValueError(f"cannot parse .{ALIGN_EXT}: {exc}") from exc
    if phone_ids.shape != durations.shape or phone_ids.ndim != 1 or len(phone_ids) == 0:
        raise ValueError(f".{ALIGN_EXT}: {phone_ids.shape} phone ids vs {durations.shape} durations")
    if int(durations.sum()) != num_frames or durations.min() < 0:
        raise ValueError(f".{ALIGN_EXT}: frames per phone sum to {int(durations.sum())}, the codes have "
                         f"{num_frames} frames")
    if phone_ids.min() < 0 or phone_ids.max() >= len(PHONES):
        raise ValueError(f".{ALIGN_EXT}: phone ids outside [0, {len(PHONES)})")
    return phone_ids, durations


def read_token_shard(url: str, stats: LoaderStats, num_codebooks: int | None = None,
                     keep: Callable[[], bool] | None = None) -> Iterator[Utterance]:
    """Utterances of one token shard in stored order; corrupt ones are logged, counted and skipped.
    `keep()`, when given, is asked once per sample (before decoding) whether this reader wants it."""

    def on_error(exc: Exception) -> bool:
        stats.corrupt += 1
        log.warning("corrupt data in token shard %s: %s", url, exc)
        return True  # go on with the rest of the shard

    try:
        stream = gopen(url, "rb")
    except Exception as exc:  # noqa: BLE001
        on_error(exc)
        return
    try:
        files = tar_file_expander([{"url": url, "stream": stream}], handler=on_error)
        for sample in group_by_keys(files, handler=on_error):
            if keep is not None and not keep():
                continue
            stats.samples += 1
            try:
                yield decode_token_sample(sample, num_codebooks)
            except ValueError as exc:
                stats.corrupt += 1
                log.warning("skipping corrupt sample %s in %s: %s", sample.get("__key__"), url, exc)
    finally:
        stream.close()

