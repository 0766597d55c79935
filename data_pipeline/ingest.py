"""Ingest: corpus (folder / manifest / LJSpeech / LibriTTS) -> validated records -> raw WebDataset shards.

Every accepted utterance becomes ``{key}.flac`` + ``{key}.json`` (``records.RawMeta``) in shards named by
``records.RAW_SHARD_PATTERN``, each at most ``shard_size_mb`` (a single clip bigger than that gets a shard
of its own). Audio keeps its channels and sample rate and is stored losslessly: 8/16-bit sources as
16-bit FLAC, 24-bit ones as 24-bit FLAC; float / 32-bit / lossy sources are quantised to 24 bits
(FLAC has no float).

Validation at the door: every item that cannot be used goes to ``rejects.jsonl`` (source, reason, detail)
and is counted in ``summary.json``; one bad item never stops the run. Reason codes: see ``REJECT_REASONS``.
Shards are written under a temporary name and renamed when complete, so a reader never sees half a shard.
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import os
import re
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import webdataset as wds
from tqdm import tqdm

from data_pipeline.alignment.schema import Alignment, sidecar_path
from data_pipeline.records import ALIGN_EXT, AUDIO_EXT, META_EXT, RAW_SHARD_PATTERN, REJECTS_FILE, RawMeta
from data_pipeline.sources import (
    FORMATS,
    SourceItem,
    TranscriptError,
    detect_format,
    discover,
    read_transcript_file,
)

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
REJECT_REASONS = {
    "missing_audio": "the audio file does not exist",
    "empty_file": "the audio file has 0 bytes",
    "unreadable": "libsndfile cannot decode the file",
    "empty_audio": "the file decodes to no samples",
    "non_finite": "NaN or infinite samples",
    "too_short": "shorter than min_seconds",
    "too_long": "longer than max_seconds",
    "silent": "RMS (DC removed) below silence_dbfs",
    "clipped": "more than max_clip_fraction of the samples at full scale",
    "missing_transcript": "no transcript for the audio",
    "empty_transcript": "transcript empty or without any letter or digit",
    "bad_transcript_encoding": "transcript is not valid UTF-8",
    "bad_manifest_row": "a manifest row that cannot be parsed",
    "duplicate": "the same audio file listed twice",
    "encode_failed": "FLAC cannot store it (e.g. more than 8 channels)",
    "worker_crashed": "the decoding process died on this file (e.g. a decoder crash or out of memory)",
    "bad_alignment": "the clip's .align.json sidecar cannot be read or does not match the audio",
    "internal_error": "an unexpected error while processing the item (a bug: please report)",
}

# libsndfile subtypes whose samples fit exactly in 16 / 24 bits; everything else goes through float.
_INT16_SUBTYPES = frozenset(
    "PCM_S8 PCM_U8 PCM_16 ULAW ALAW ALAC_16 DWVW_12 DWVW_16 DPCM_8 DPCM_16 IMA_ADPCM MS_ADPCM GSM610 "
    "VOX_ADPCM G721_32 G723_24 G723_40 NMS_ADPCM_16 NMS_ADPCM_24 NMS_ADPCM_32".split()
)
_INT24_SUBTYPES = frozenset("PCM_24 ALAC_20 ALAC_24 DWVW_24".split())
_TAR_BLOCK = 512
_TAR_RECORD = 20 * _TAR_BLOCK  # tarfile pads the archive to a multiple of this
_MAX_KEY_LEN = 80
_CHUNK = 8  # items per task sent to a worker


@dataclass
class IngestConfig:
    """Settings of one ingest run (the CLI flags of scripts/ingest.py map 1:1 onto these)."""

    format: str = "auto"  # auto | folder | manifest | ljspeech | libritts
    speaker: str | None = None  # force one speaker name for every item
    shard_size_mb: float = 256.0  # upper bound of one shard's size on disk
    shard_max_count: int = 100_000  # upper bound of the clips in one shard
    min_seconds: float = 0.3
    max_seconds: float = 60.0
    silence_dbfs: float = -60.0  # RMS of the DC-free signal, dB relative to full scale
    clip_level: float = 0.999  # |sample| at or above this (full scale = 1) counts as clipped
    max_clip_fraction: float = 0.01
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))  # 0 = in this process
    start_method: str | None = None  # multiprocessing start method for the workers; None = the default
    overwrite: bool = False
    log_rejects: int = 20  # rejects logged as warnings; the rest only go to rejects.jsonl

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {self.format!r}")
        if self.shard_size_mb <= 0 or self.shard_max_count < 1:
            raise ValueError("shard_size_mb and shard_max_count must be positive")
        if not 0 <= self.min_seconds < self.max_seconds:
            raise ValueError(
                f"need 0 <= min_seconds < max_seconds, got {self.min_seconds}, {self.max_seconds}"
            )
        if not 0 < self.clip_level <= 1 or not 0 <= self.max_clip_fraction <= 1:
            raise ValueError("clip_level must be in (0, 1] and max_clip_fraction in [0, 1]")


@dataclass
class ItemResult:
    key: str
    source: str
    flac: bytes | None = None
    meta: RawMeta | None = None
    align: bytes | None = None  # the clip's .align.json sidecar (exact synthesiser timings), if it has one
    reason: str | None = None
    detail: str = ""


@dataclass
class IngestSummary:
    input: str
    format: str
    output_dir: str
    total: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    accepted_hours: float = 0.0
    speakers: int = 0
    shards: list[dict] = field(default_factory=list)  # {"name", "samples", "bytes"}
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- audio


class Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_audio(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int, str]:
    """Decode a file for lossless storage: (samples [T, C], sample_rate, FLAC subtype).

    Samples are int16 for 8/16-bit sources (PCM_16), int32 holding 24 significant bits for 24-bit sources and
    float64 for the rest (PCM_24 after quantising). Raises Reject.
    """
    if not path.exists():
        raise Reject("missing_audio", f"{path} does not exist")
    if path.stat().st_size == 0:
        raise Reject("empty_file", f"{path} has 0 bytes")
    try:
        with sf.SoundFile(path) as f:
            sr, frames = f.samplerate, f.frames
            if max_seconds is not None and frames / sr > max_seconds:  # don't decode an hour-long file
                raise Reject("too_long", f"{frames / sr:.2f} s > {max_seconds} s")
            if f.subtype in _INT16_SUBTYPES:
                return f.read(dtype="int16", always_2d=True), sr, "PCM_16"
            if f.subtype in _INT24_SUBTYPES:
                return f.read(dtype="int32", always_2d=True), sr, "PCM_24"
            return f.read(dtype="float64", always_2d=True), sr, "PCM_24"
    except Reject:
        raise
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError / others on corrupt data
        raise Reject("unreadable", f"{path}: {type(e).__name__}: {e}") from e


def to_float(samples: np.ndarray) -> np.ndarray:
    """Full scale = 1.0, float32 (int16 / left-justified int32 / float input)."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return samples.astype(np.float32) / 2147483648.0
    return samples.astype(np.float32)


def check_audio(samples: np.ndarray, sample_rate: int, cfg: IngestConfig) -> None:
    """Raise Reject if the decoded audio [T, C] is not usable for training."""
    frames = samples.shape[0]
    if frames == 0 or samples.shape[1] == 0:
        raise Reject("empty_audio", "no samples")
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise Reject("non_finite", f"{bad} NaN/inf samples of {samples.size}")
    duration = frames / sample_rate
    if duration < cfg.min_seconds:
        raise Reject("too_short", f"{duration:.3f} s < {cfg.min_seconds} s")
    if duration > cfg.max_seconds:
        raise Reject("too_long", f"{duration:.2f} s > {cfg.max_seconds} s")
    x = to_float(samples)
    # DC removed so that a constant offset (a dead microphone) counts as silence too.
    rms = float(np.sqrt(np.mean(np.square(x - x.mean(axis=0, keepdims=True), dtype=np.float64))))
    dbfs = 20.0 * math.log10(rms) if rms > 0 else -math.inf
    if dbfs < cfg.silence_dbfs:
        raise Reject("silent", f"RMS {dbfs:.1f} dBFS < {cfg.silence_dbfs} dBFS")
    clipped = float(np.mean(np.abs(x) >= cfg.clip_level))
    if clipped > cfg.max_clip_fraction:
        raise Reject("clipped", f"{clipped:.1%} of samples at full scale (limit {cfg.max_clip_fraction:.1%})")


def encode_flac(samples: np.ndarray, sample_rate: int, subtype: str) -> bytes:
    """Encode [T, C] samples as FLAC bytes; float input is quantised to 24 bits (rounded, clipped)."""
    if samples.dtype.kind == "f":
        # Quantise ourselves: libsndfile wraps around on out-of-range floats unless clipping is switched on.
        q = np.clip(np.round(samples * 2.0**23), -(2**23), 2**23 - 1).astype(np.int32)
        samples = np.left_shift(q, 8)
    buf = io.BytesIO()
    try:
        sf.write(buf, samples, sample_rate, format="FLAC", subtype=subtype)
    except Exception as e:
        raise Reject("encode_failed", f"{type(e).__name__}: {e}") from e
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- items


def read_sidecar(audio: Path, seconds: float, tolerance: float = 0.05) -> bytes | None:
    """The clip's `.align.json` sidecar (written by the synthetic corpus builders), checked against the
    audio; None when there is none. Raises Reject("bad_alignment") for one that is unreadable or whose
    duration differs from the audio's by more than `tolerance` seconds."""
    path = sidecar_path(audio)
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        alignment = Alignment.from_json(json.loads(data))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Reject("bad_alignment", f"{path}: {type(e).__name__}: {e}") from e
    if abs(alignment.duration - seconds) > tolerance or not alignment.phones:
        raise Reject("bad_alignment", f"{path}: covers {alignment.duration:.3f} s of a {seconds:.3f} s clip"
                     if alignment.phones else f"{path}: no phones")
    return data


def process_item(keyed: tuple[str, SourceItem], cfg: IngestConfig) -> ItemResult:
    """Validate one item and encode its audio; runs in a worker process. Never raises."""
    key, item = keyed
    result = ItemResult(key=key, source=item.source)
    try:
        if item.reject is not None:
            raise Reject(*item.reject)
        text = item.text
        if item.text_file is not None:
            try:
                text = read_transcript_file(item.text_file)
            except TranscriptError as e:
                raise Reject(e.reason, e.detail) from e
        if not text:
            raise Reject("missing_transcript", f"no transcript for {item.audio}")
        samples, sr, subtype = read_audio(item.audio, cfg.max_seconds)
        check_audio(samples, sr, cfg)
        result.flac = encode_flac(samples, sr, subtype)
        result.align = read_sidecar(item.audio, samples.shape[0] / sr)
        result.meta = RawMeta(
            text=text,
            speaker=item.speaker,
            duration=round(samples.shape[0] / sr, 6),
            sample_rate=int(sr),
            source=item.source,
        )
    except Reject as e:
        result.reason, result.detail = e.reason, e.detail
    except Exception as e:  # a bug must not end a long run: record it with the item
        result.reason, result.detail = "internal_error", f"{type(e).__name__}: {e}"
    return result


def make_key(hint: str, used: set[str]) -> str:
    """A WebDataset-safe key (letters, digits, '_' and '-': no dots, no slashes), unique within ``used``."""
    parts = [re.sub(r"[^A-Za-z0-9_-]+", "_", p).strip("_") for p in hint.split("/")]
    key = "__".join(p for p in parts if p) or "utt"
    if len(key) > _MAX_KEY_LEN:
        key = key[-_MAX_KEY_LEN:].lstrip("_-")
    base, n = key, 1
    while key in used:
        n += 1
        key = f"{base}_{n}"
    used.add(key)
    return key


def assign_keys(items: Iterable[SourceItem]) -> Iterator[tuple[str, SourceItem]]:
    """Give every item a unique key and mark repeated audio files as duplicates."""
    used: set[str] = set()
    seen: dict[str, str] = {}
    for item in items:
        key = make_key(item.key_hint, used)
        if item.reject is None:
            real = os.path.realpath(item.audio)
            if real in seen:
                item.reject = ("duplicate", f"{item.audio} already ingested as {seen[real]}")
            else:
                seen[real] = key
        yield key, item


# ----------------------------------------------------------------------------------------------- shards


def _tar_member_size(nbytes: int) -> int:
    return _TAR_BLOCK + -(-nbytes // _TAR_BLOCK) * _TAR_BLOCK


def _tar_file_size(content: int) -> int:
    """Size of a closed tar archive: the members, two zero end blocks, padded to a full record."""
    return -(-(content + 2 * _TAR_BLOCK) // _TAR_RECORD) * _TAR_RECORD


class BoundedShardWriter:
    """Writes samples into ``out_dir/pattern % i`` tar shards, each at most ``max_bytes`` on disk.

    webdataset's ShardWriter starts a new shard only after the limit is passed; this one computes the exact
    tar size before writing, so the bound holds (a single sample larger than the bound gets its own shard).
    Given the `total` number of samples, the count limit is spread evenly: 3,760 clips at most 250 a shard
    make 16 shards of 235, not 15 of 250 and one of 10 (training holds out the last shard for validation).
    """

    def __init__(self, out_dir: Path, max_bytes: int, max_count: int, pattern: str = RAW_SHARD_PATTERN,
                 total: int | None = None):
        self.out_dir, self.pattern = Path(out_dir), pattern
        self.max_bytes, self.max_count = max_bytes, max_count
        self.total = total
        self.planned = math.ceil(total / max_count) if total else 0
        self.shards: list[dict] = []
        self._writer: wds.TarWriter | None = None
        self._tmp: Path | None = None
        self._content = self._count = self._written = 0
        self._limit = max_count

    def write(self, key: str, files: dict[str, bytes]) -> None:
        size = sum(_tar_member_size(len(v)) for v in files.values())
        if self._writer is not None and (
            self._count >= self._limit or _tar_file_size(self._content + size) > self.max_bytes
        ):
            self._finish()
        if self._writer is None:
            self._open()
        if _tar_file_size(size) > self.max_bytes:
            log.warning(
                "sample %s (%d bytes) is larger than the shard size bound; it gets its own shard", key, size
            )
        # mtime fixed so that the same input gives byte-identical shards.
        self._writer.write({"__key__": key, **files})
        self._content += size
        self._count += 1
        self._written += 1

    def _open(self) -> None:
        left_shards = self.planned - len(self.shards)
        if self.total and left_shards > 0:
            self._limit = min(self.max_count, math.ceil(max(self.total - self._written, 1) / left_shards))
        else:
            self._limit = self.max_count
        name = self.pattern % len(self.shards)
        self._tmp = self.out_dir / (name + ".tmp")
        self._writer = wds.TarWriter(str(self._tmp), encoder=False, mtime=0)
        self._content = self._count = 0

    def _finish(self) -> None:
        self._writer.close()
        final = self._tmp.with_name(self._tmp.name[: -len(".tmp")])
        os.replace(self._tmp, final)
        self.shards.append({"name": final.name, "samples": self._count, "bytes": final.stat().st_size})
        self._writer = self._tmp = None

    def close(self) -> list[dict]:
        if self._writer is not None:
            self._finish()
        return self.shards


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    shard_glob = re.sub(r"%0?\d*d", "*", RAW_SHARD_PATTERN)
    old = sorted(out_dir.glob(shard_glob)) + sorted(out_dir.glob(shard_glob + ".tmp"))
    old += [p for p in (out_dir / REJECTS_FILE, out_dir / SUMMARY_FILE) if p.exists()]
    if old and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds ingest output ({old[0].name}, ...); pass overwrite=True"
        )
    for p in old:
        p.unlink()


# ----------------------------------------------------------------------------------------------- run


def _process_chunk(chunk: list[tuple[str, SourceItem]], cfg: IngestConfig) -> list[ItemResult]:
    return [process_item(keyed, cfg) for keyed in chunk]


def _process_isolated(keyed: tuple[str, SourceItem], cfg: IngestConfig, ctx) -> ItemResult:
    """Run one item in a process of its own; a crash there rejects the item instead of the run."""
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        try:
            return pool.submit(process_item, keyed, cfg).result()
        except BrokenProcessPool:
            log.error("the decoding process died on %s", keyed[1].source)
            return ItemResult(
                keyed[0], keyed[1].source, reason="worker_crashed", detail="decoder process died"
            )


def _results(keyed: list[tuple[str, SourceItem]], cfg: IngestConfig) -> Iterator[ItemResult]:
    """Results in input order (deterministic shards); decoding and FLAC encoding run in worker processes.

    A worker that dies (a decoder segfault, the OOM killer) breaks the pool: the pool is rebuilt, and the
    items of the chunk that was running are retried one process each, so only the culprit is rejected.
    """
    if cfg.workers <= 0:
        yield from (process_item(k, cfg) for k in keyed)
        return
    ctx = multiprocessing.get_context(cfg.start_method)
    chunks = iter([keyed[i : i + _CHUNK] for i in range(0, len(keyed), _CHUNK)])
    pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx)
    pending: deque = deque()

    def submit() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            pending.append((chunk, pool.submit(_process_chunk, chunk, cfg)))

    try:
        for _ in range(4 * cfg.workers):  # a bounded window keeps memory flat on huge corpora
            submit()
        while pending:
            chunk, future = pending.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                results = [_process_isolated(k, cfg, ctx) for k in chunk]
                pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx)
                pending = deque((c, pool.submit(_process_chunk, c, cfg)) for c, _ in pending)
            yield from results
            submit()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ingest(
    input_path: str | Path, output_dir: str | Path, cfg: IngestConfig | None = None, progress: bool = True
) -> IngestSummary:
    """Ingest a corpus into raw shards + rejects.jsonl + summary.json under ``output_dir``."""
    cfg = cfg or IngestConfig()
    input_path, out_dir = Path(input_path).absolute(), Path(output_dir)
    start = time.perf_counter()
    fmt = detect_format(input_path) if cfg.format == "auto" else cfg.format
    keyed = list(assign_keys(discover(input_path, fmt, cfg.speaker)))  # before touching the output
    _prepare_output(out_dir, cfg.overwrite)
    log.info("%s: %d items found (format %s)", input_path, len(keyed), fmt)

    summary = IngestSummary(input=str(input_path), format=fmt, output_dir=str(out_dir), total=len(keyed))
    reasons: Counter[str] = Counter()
    speakers: set[str] = set()
    seconds = 0.0
    writer = BoundedShardWriter(out_dir, int(cfg.shard_size_mb * 2**20), cfg.shard_max_count,
                                total=len(keyed))
    with open(out_dir / REJECTS_FILE, "w", encoding="utf-8") as rejects:
        bar = tqdm(_results(keyed, cfg), total=len(keyed), unit="clip", desc="ingest", disable=not progress)
        for res in bar:
            if res.reason is None:
                meta_json = json.dumps(res.meta.to_dict(), ensure_ascii=False).encode("utf-8")
                members = {AUDIO_EXT: res.flac, META_EXT: meta_json}
                if res.align is not None:
                    members[ALIGN_EXT] = res.align
                writer.write(res.key, members)
                summary.accepted += 1
                seconds += res.meta.duration
                speakers.add(res.meta.speaker)
            else:
                record = {"source": res.source, "reason": res.reason, "detail": res.detail, "key": res.key}
                rejects.write(json.dumps(record, ensure_ascii=False) + "\n")
                reasons[res.reason] += 1
                summary.rejected += 1
                if summary.rejected <= cfg.log_rejects:
                    log.warning("rejected %s: %s (%s)", res.source, res.reason, res.detail)
                elif summary.rejected == cfg.log_rejects + 1:
                    log.warning("more rejects: see %s", out_dir / REJECTS_FILE)
            bar.set_postfix(ok=summary.accepted, rejected=summary.rejected, refresh=False)
    summary.shards = writer.close()
    summary.reasons = dict(sorted(reasons.items()))
    summary.accepted_hours = round(seconds / 3600.0, 4)
    summary.speakers = len(speakers)
    summary.elapsed_s = round(time.perf_counter() - start, 2)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: IngestSummary) -> str:
    """A short human-readable report of an ingest run."""
    lines = [
        f"input      {summary.input} ({summary.format})",
        f"output     {summary.output_dir}",
        f"items      {summary.total}: {summary.accepted} accepted, {summary.rejected} rejected",
        f"audio      {summary.accepted_hours:.3f} h from {summary.speakers} speakers",
        f"shards     {len(summary.shards)} ({sum(s['bytes'] for s in summary.shards) / 2**20:.1f} MiB)",
        f"time       {summary.elapsed_s:.1f} s",
    ]
    for reason, count in summary.reasons.items():
        lines.append(f"  rejected {reason:<24} {count:>7}  ({REJECT_REASONS.get(reason, '')})")
    if summary.rejected:
        lines.append(f"rejects listed in {Path(summary.output_dir) / REJECTS_FILE}")
    return "\n".join(lines)
