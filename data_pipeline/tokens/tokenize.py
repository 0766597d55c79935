"""Tokenize: raw shards ({key}.flac + {key}.json) -> token shards ({key}.codes.npy + {key}.json).

One output shard per input shard (`raw-000012.tar` -> `tokens-000012.tar`), written under `NAME.tmp` and
renamed when complete, so a killed run resumes by skipping finished shards; a leftover `.tmp` is stale by
construction (exactly one process owns each shard) and is deleted by its owner before redoing the shard.

Inside a shard, clips are encoded in length-sorted padded batches (shard_tokenizer.py). A clip that cannot be
decoded or encoded goes to `OUTPUT/rejects.jsonl` (shard, key, reason, detail) and to the shard's summary; the
run goes on.

Distributed: every launcher rank (RANK / WORLD_SIZE from `torchrun` / `deepspeed`) and every local worker
process takes a disjoint strided subset of the sorted input shards.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from codec.base import Codec, load_codec
from data_pipeline.records import REJECTS_FILE
from data_pipeline.sharding import expand_shards, process_place, split_shards
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.shard_tokenizer import ShardSummary, ShardTokenizer
from data_pipeline.tokens.token_codec import claim_token_folder
from data_pipeline.tokens.token_shards import TMP_SUFFIX, token_shard_name, write_tar

log = logging.getLogger(__name__)

SUMMARY_DIR = "summaries"


# ---- one finished shard ----------------------------------------------------------------------------
def publish_shard(out_dir: Path, summary: ShardSummary, samples: list[dict]) -> None:
    """Write a tokenized shard: tar to `.tmp`, then its summary, then its rejects, then the rename that
    commits it. A kill before the rename leaves only a stale `.tmp` (and at worst duplicated reject
    lines, never lost ones)."""
    out_path = out_dir / summary.output
    tmp = out_path.with_name(out_path.name + TMP_SUFFIX)
    write_tar(tmp, samples)
    summaries = out_dir / SUMMARY_DIR
    summaries.mkdir(exist_ok=True)
    summary_path = summaries / (Path(summary.output).stem + ".json")
    summary_tmp = summary_path.with_name(summary_path.name + TMP_SUFFIX)
    summary_tmp.write_text(json.dumps(asdict(summary), indent=1, ensure_ascii=False) + "\n")
    os.replace(summary_tmp, summary_path)
    if summary.rejects:
        lines = "".join(json.dumps({k: r[k] for k in ("shard", "key", "reason", "detail")},
                                   ensure_ascii=False) + "\n" for r in summary.rejects)
        with open(out_dir / REJECTS_FILE, "a", encoding="utf-8") as f:
            f.write(lines)  # one append per shard
    os.replace(tmp, out_path)


# ---- the run ---------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    shards: int = 0  # shards owned by this process (rank x workers)
    skipped: int = 0  # already finished by an earlier run
    done: int = 0
    clips: int = 0
    written: int = 0
    aligned: int = 0
    rejected: int = 0
    audio_seconds: float = 0.0
    forwards: int = 0
    encode_seconds: float = 0.0  # summed over workers
    align_seconds: float = 0.0  # summed over workers
    seconds: float = 0.0  # wall time

    def add(self, s: ShardSummary) -> None:
        self.done += 1
        self.encode_seconds += s.encode_seconds
        self.clips += s.clips
        self.written += s.written
        self.aligned += s.aligned
        self.align_seconds += s.align_seconds
        self.rejected += s.rejected
        self.audio_seconds += s.audio_seconds
        self.forwards += s.forwards

    def merge(self, other: RunSummary) -> None:
        for name in asdict(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def owned_shards(shards: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards of local worker `worker` on launcher rank `rank`: disjoint over all (rank, worker)."""
    return split_shards(shards, rank * num_workers + worker, world_size * num_workers)


def _device(cfg: TokenizeConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda":
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(cfg.device)


def _run_worker(urls: list[str], out_dir: str, cfg: TokenizeConfig, worker: int, local_rank: int,
                codec: Codec | None = None) -> RunSummary:
    out = Path(out_dir)
    run = RunSummary(shards=len(urls))
    todo = []
    for url in urls:
        final = out / token_shard_name(Path(url).name)
        stale = final.with_name(final.name + TMP_SUFFIX)
        if final.exists():
            run.skipped += 1
            continue
        if stale.exists():
            log.info("removing stale %s from an interrupted run", stale)
            stale.unlink()  # this process is the shard's only owner, so nobody else is writing it
        todo.append(url)
    if not todo:
        return run
    if cfg.num_workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.num_workers))
    start = time.perf_counter()
    codec = codec or load_codec(cfg.codec, device=_device(cfg, local_rank), seed=cfg.seed)
    tokenizer = ShardTokenizer(codec, cfg.codec, cfg)
    bar = tqdm(todo, desc=f"tokenize[{worker}]", unit="shard", position=worker, disable=not cfg.progress)
    for url in bar:
        summary, samples = tokenizer.tokenize_shard(url)
        publish_shard(out, summary, samples)
        run.add(summary)
        log.info("%s -> %s: %d clips, %d written, %d rejected, %.1f s audio in %.1f s (%d forwards, "
                 "padding %.1f%%)", summary.input, summary.output, summary.clips, summary.written,
                 summary.rejected, summary.audio_seconds, summary.seconds, summary.forwards,
                 100 * summary.padding)
        bar.set_postfix(clips=run.written, rejected=run.rejected, refresh=False)
    run.seconds = time.perf_counter() - start
    return run


def tokenize_shards(input_spec: str | Path | list[str], output_dir: str | Path,
                    cfg: TokenizeConfig | None = None, codec: Codec | None = None) -> RunSummary:
    """Tokenize this process's share of the raw shards into `output_dir`; returns what it did.

    Rerunning after a kill skips finished shards. Under `torchrun` / `deepspeed` every rank calls this
    with the same arguments; `cfg.num_workers` > 1 splits the rank's share over local processes.
    `codec`: an already built codec to use instead of loading `cfg.codec` (one worker only); `cfg.codec`
    is still what the token metadata records, so it must describe that codec.
    """
    cfg = cfg or TokenizeConfig()
    if codec is not None and cfg.num_workers > 1:
        raise ValueError("pass a codec instance only with num_workers == 1 (workers load their own)")
    shards = expand_shards(input_spec if isinstance(input_spec, list) else str(input_spec))
    if not shards:
        raise FileNotFoundError(f"no raw shards (*.tar) found in {input_spec}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    claim_token_folder(out, cfg.codec)  # refuses a folder another codec filled
    place = process_place(cfg.rank, cfg.world_size)
    workers = max(1, cfg.num_workers)
    shares = [owned_shards(shards, place.rank, place.world_size, w, workers) for w in range(workers)]
    log.info("rank %d/%d: %d of %d shards over %d worker(s), codec %s", place.rank, place.world_size,
             sum(map(len, shares)), len(shards), workers, cfg.codec)
    start = time.perf_counter()
    total = RunSummary()
    if workers == 1:
        total.merge(_run_worker(shares[0], str(out), cfg, 0, place.local_rank, codec))
    else:
        # spawn, not fork: forking a process whose torch thread pools already started can deadlock
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            args = [(share, str(out), cfg, w, place.local_rank) for w, share in enumerate(shares)]
            for part in pool.starmap(_run_worker, args):
                total.merge(part)
    total.seconds = time.perf_counter() - start  # wall time, not the sum over workers
    return total
