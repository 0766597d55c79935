"""Which shards a process owns: URL expansion, the process's place in the job, disjoint splits.

Used by both tokenize (raw -> token shards) and the loader (token shards -> batches), so that the
two agree on how `torchrun` / `deepspeed` ranks and local workers divide the shards.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from webdataset.shardlists import expand_urls

_GLOB_CHARS = set("*?[")


def expand_shards(spec: str | os.PathLike | list[str | os.PathLike], suffix: str = ".tar") -> list[str]:
    """Turn a shard spec into an ordered list of URLs.

    `spec` may be a directory (every `*{suffix}` inside, sorted), a glob, a brace pattern
    (`shards/tok-{000000..000099}.tar`), several of those joined with `::`, a `pipe:` / http URL,
    or a list of any of them. Temporary files (`*.tmp`) never match the directory form.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    urls: list[str] = []
    for item in items:
        for url in expand_urls(str(item)):
            if "://" in url or url.startswith("pipe:"):
                urls.append(url)
            elif Path(url).is_dir():
                urls.extend(sorted(str(p) for p in Path(url).glob(f"*{suffix}") if p.is_file()))
            elif _GLOB_CHARS & set(url):
                urls.extend(sorted(glob.glob(url)))
            else:
                urls.append(url)
    return urls


@dataclass(frozen=True)
class ProcessPlace:
    """This process's rank among `world_size` launcher processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def process_place(rank: int | None = None, world_size: int | None = None) -> ProcessPlace:
    """Rank / world size from explicit values, else an initialised torch.distributed group, else the
    RANK / WORLD_SIZE / LOCAL_RANK variables `torchrun` and `deepspeed` set, else one process."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        elif "LOCAL_RANK" in os.environ and "LOCAL_WORLD_SIZE" in os.environ:
            rank, world_size = local_rank, int(os.environ["LOCAL_WORLD_SIZE"])
        else:
            rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return ProcessPlace(rank=rank, world_size=world_size, local_rank=local_rank)


def split_shards(shards: list[str], index: int, count: int) -> list[str]:
    """Shards owned by member `index` of `count`: a strided slice, so members are disjoint and together
    complete, and each member's share differs in size by at most one shard."""
    if not 0 <= index < count:
        raise ValueError(f"split index {index} is outside 0..{count - 1}")
    return shards[index::count]
