"""The settings of one ingest run (the CLI flags of scripts/ingest.py map 1:1 onto these)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from data_pipeline.ingest.sources import FORMATS


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
