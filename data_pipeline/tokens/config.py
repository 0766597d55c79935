"""The settings of one tokenize run (the CLI flags of scripts/tokenize_shards.py map onto these)."""

from __future__ import annotations

from dataclasses import dataclass

ALIGN_MODES = ("auto", "exact", "off")


@dataclass
class TokenizeConfig:
    codec: str = "encodec_24khz"  # a `codec.base.load_codec` spec
    # Padded audio per codec forward (B * T_max); 0 = one clip per forward. None: 8 s on CPU, 200 s on GPU.
    # On CPU the convolutions at the audio rate dominate and already fill a core with one clip, while
    # big batches spill out of cache: scripts/bench_tokenize.py measured batches of 30 s+ as slower there.
    batch_seconds: float | None = None
    batch_frames: int | None = None  # the same bound in codec frames; overrides batch_seconds
    max_padding: float = 0.1  # a batch closes before a clip shorter than (1 - max_padding) * its longest
    window_seconds: float = 1200.0  # decoded audio held at once and length-sorted
    long_clip_seconds: float = 60.0  # clips longer than this are encoded alone, in overlapping chunks
    device: str = "cpu"  # "cuda" picks cuda:LOCAL_RANK
    num_workers: int = 1  # processes on this machine, each with its own codec copy
    rank: int | None = None  # None: RANK / WORLD_SIZE env, else one process
    world_size: int | None = None
    seed: int = 0  # codec seed for `:random` specs (must match across processes)
    progress: bool = True
    # Phone alignments ({key}.align.json): "exact" keeps the synthesiser timings a raw shard carries;
    # "auto" also runs the forced aligner on every other clip and rejects the clips it cannot fit;
    # "off" writes none.
    align: str = "auto"
    aligner: str | None = None  # aligner directory (None: models/aligner)

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {self.align!r}")

