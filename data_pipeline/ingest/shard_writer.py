"""Raw shards of a bounded size: `BoundedShardWriter` knows each tar's exact size before it writes a sample.

Shards are written under a temporary name and renamed when complete, so a reader never sees half a shard.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import webdataset as wds

from data_pipeline.records import RAW_SHARD_PATTERN

log = logging.getLogger(__name__)

_TAR_BLOCK = 512
_TAR_RECORD = 20 * _TAR_BLOCK  # tarfile pads the archive to a multiple of this


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

