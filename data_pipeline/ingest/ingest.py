"""Ingest: corpus (folder / manifest / LJSpeech / LibriTTS) -> validated records -> raw WebDataset shards.

Every accepted utterance becomes ``{key}.flac`` + ``{key}.json`` (``records.RawMeta``) in shards named by
``records.RAW_SHARD_PATTERN``, each at most ``shard_size_mb`` (a single clip bigger than that gets a shard
of its own). Audio keeps its channels and sample rate and is stored losslessly: 8/16-bit sources as
16-bit FLAC, 24-bit ones as 24-bit FLAC; float / 32-bit / lossy sources are quantised to 24 bits
(FLAC has no float).

Validation at the door: every item that cannot be used goes to ``rejects.jsonl`` (source, reason, detail)
and is counted in ``summary.json``; one bad item never stops the run. Reason codes: see ``REJECT_REASONS``.
Shards are written under a temporary name and renamed when complete, so a reader never sees half a shard.

Parts: discovery of the corpus layout (sources.py, manifest.py, transcripts.py), the settings (config.py),
the checks and the FLAC encoding of one item (validate.py, in worker processes), the shard writer
(shard_writer.py); this module assigns keys and runs them all.
"""

from __future__ import annotations

import json
import logging
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

from tqdm import tqdm

from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.shard_writer import BoundedShardWriter
from data_pipeline.ingest.sources import SourceItem, detect_format, discover
from data_pipeline.ingest.validate import REJECT_REASONS, ItemResult, process_item
from data_pipeline.records import ALIGN_EXT, AUDIO_EXT, META_EXT, RAW_SHARD_PATTERN, REJECTS_FILE

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
_MAX_KEY_LEN = 80
_CHUNK = 8  # items per task sent to a worker


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


# ----------------------------------------------------------------------------------------------- keys


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


# ----------------------------------------------------------------------------------------------- output


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
