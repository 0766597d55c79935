"""One speaker's recordings -> training token shards + held-out clips, through the project's own pipeline.

    --data: a folder of audio + transcripts (any layout scripts/ingest.py reads) or raw shards
        --ingest (data_pipeline.ingest, every clip under one speaker name)-->  OUT/raw/raw-*.tar
        --split (seeded choice over the sorted clip keys: deterministic)-->     OUT/split.json
                                                                                OUT/clips/<key>.flac
        train clips --> OUT/train_raw/raw-*.tar --tokenize (the base model's codec)--> OUT/tokens/*.tar
        held-out clips are never written to a training shard; they serve evaluation only.

The speaker name is forced to one value so the loader pairs every clip with a prompt from another clip.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from codec.base import Codec
from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.records import AUDIO_EXT, CODES_EXT, META_EXT, RAW_SHARD_PATTERN
from data_pipeline.sharding import expand_shards
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.shard_tokenizer import read_raw_shard
from data_pipeline.tokens.token_shards import write_shard_atomically
from data_pipeline.tokens.tokenize import tokenize_shards

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"


@dataclass
class Clip:
    """One recording of the speaker: transcript, duration and a FLAC copy of its audio."""

    key: str
    text: str
    duration: float
    path: Path


@dataclass
class SpeakerData:
    train: list[Clip]
    heldout: list[Clip]
    token_shards: list[str]  # training clips only
    root: Path

    @property
    def train_seconds(self) -> float:
        return sum(c.duration for c in self.train)


def split_heldout(keys: list[str], fraction: float = 0.15, minimum: int = 3, seed: int = 0
                  ) -> tuple[list[str], list[str]]:
    """(train, held-out) keys, both sorted. max(minimum, round(fraction * n)) clips are held out, chosen
    by a seeded RNG over the sorted keys, so the same clips and seed always give the same split."""
    keys = sorted(set(keys))
    count = max(minimum, round(fraction * len(keys)))
    if len(keys) - count < 2:
        raise ValueError(f"{len(keys)} usable clips: holding out {count} for evaluation leaves fewer than 2 "
                         f"to train on (give more recordings, or lower the held-out share)")
    held = set(random.Random(seed).sample(keys, count))
    return [k for k in keys if k not in held], [k for k in keys if k in held]


def _shard_kind(urls: list[str]) -> str | None:
    """'raw' / 'tokens' from the members of the first sample of the first shard, None when no shards."""
    for url in urls[:1]:
        for _, members in read_raw_shard(url, []):
            if AUDIO_EXT in members:
                return "raw"
            if CODES_EXT in members:
                return "tokens"
            break
        raise ValueError(f"{url}: neither raw ({{key}}.{AUDIO_EXT}) nor token ({{key}}.{CODES_EXT}) samples")
    return None


def raw_shards_for(data: Path, work: Path, speaker: str) -> list[str]:
    """The raw shards of `data`: as they are when `data` holds raw shards, else ingested into work/raw."""
    tars = expand_shards(str(data)) if data.is_dir() or data.suffix == ".tar" or "*" in str(data) else []
    tars = [t for t in tars if Path(t).is_file()]
    kind = _shard_kind(tars) if tars else None
    if kind == "tokens":
        raise ValueError(f"{data} holds token shards: pass the recordings or the raw shards of "
                         f"scripts/ingest.py (evaluation needs the held-out clips' audio)")
    if kind == "raw":
        log.info("%s: %d raw shards (already ingested)", data, len(tars))
        return tars
    summary = ingest(data, work / "raw", IngestConfig(speaker=speaker, workers=0, overwrite=True))
    if summary.rejected:
        log.warning("ingest rejected %d of %d clips (reasons %s; see %s)", summary.rejected, summary.total,
                    summary.reasons, work / "raw" / "rejects.jsonl")
    if not summary.accepted:
        raise ValueError(f"{data}: no usable recording with a transcript (see {work / 'raw'}/rejects.jsonl)")
    return expand_shards(str(work / "raw"))


def _read_clips(raw_shards: list[str], clip_dir: Path, speaker: str) -> tuple[dict[str, Clip], dict]:
    """Every clip of the raw shards -> (clips by key, raw samples by key); audio copied to clip_dir."""
    clip_dir.mkdir(parents=True, exist_ok=True)
    clips, samples = {}, {}
    for url in raw_shards:
        for key, members in read_raw_shard(url, []):
            meta = json.loads(members[META_EXT])
            meta["speaker"] = speaker  # one voice: every clip may prompt every other
            path = clip_dir / f"{key}.{AUDIO_EXT}"
            path.write_bytes(members[AUDIO_EXT])
            clips[key] = Clip(key, meta["text"], float(meta["duration"]), path)
            samples[key] = {"__key__": key, AUDIO_EXT: members[AUDIO_EXT],
                            META_EXT: json.dumps(meta, ensure_ascii=False).encode("utf-8")}
    return clips, samples


def prepare_speaker_data(data: str | Path, work: str | Path, codec: Codec, codec_spec: str,
                         holdout_fraction: float = 0.15, min_holdout: int = 3, seed: int = 0,
                         num_shards: int = 1, speaker: str = "target", progress: bool = True,
                         align: str = "off") -> SpeakerData:
    """Ingest (unless given raw shards), split, write the training raw shards (`num_shards` of them, e.g.
    one per rank) and tokenize them with `codec` (recorded as `codec_spec`). `work` is rebuilt.
    `align="auto"` force-aligns every clip to its transcript (a phone-aligned model needs it; clips that do
    not fit their transcript are rejected)."""
    data, work = Path(data), Path(work)
    if not data.exists() and not any(ch in str(data) for ch in "*{"):
        raise FileNotFoundError(f"--data {data} does not exist")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    clips, samples = _read_clips(raw_shards_for(data, work, speaker), work / "clips", speaker)
    train_keys, held_keys = split_heldout(list(clips), holdout_fraction, min_holdout, seed)
    train_raw = work / "train_raw"
    train_raw.mkdir()
    for s in range(num_shards):  # round robin, so every rank's shard has clips
        shard = [samples[k] for k in train_keys[s::num_shards]]
        write_shard_atomically(train_raw / (RAW_SHARD_PATTERN % s), shard)
    tok_cfg = TokenizeConfig(codec=codec_spec, rank=0, world_size=1, progress=progress, align=align)
    run = tokenize_shards(str(train_raw), work / "tokens", tok_cfg, codec=codec)
    if run.rejected:
        log.warning("tokenize rejected %d training clips (see %s)", run.rejected, work / "tokens")
    result = SpeakerData(train=[clips[k] for k in train_keys], heldout=[clips[k] for k in held_keys],
                         token_shards=expand_shards(str(work / "tokens")), root=work)
    split = {"seed": seed, "holdout_fraction": holdout_fraction, "min_holdout": min_holdout,
             "train": [_plain(c) for c in result.train], "heldout": [_plain(c) for c in result.heldout]}
    (work / SPLIT_FILE).write_text(json.dumps(split, indent=2, ensure_ascii=False) + "\n")
    log.info("%d clips: %d for training (%.0f s), %d held out for evaluation", len(clips), len(train_keys),
             result.train_seconds, len(held_keys))
    return result


def _plain(clip: Clip) -> dict:
    return {**asdict(clip), "path": str(clip.path)}


def load_speaker_data(work: str | Path) -> SpeakerData:
    """The result of an earlier `prepare_speaker_data` into `work` (for ranks other than the one that
    prepared it)."""
    work = Path(work)
    split = json.loads((work / SPLIT_FILE).read_text())

    def clips(rows: list[dict]) -> list[Clip]:
        return [Clip(r["key"], r["text"], float(r["duration"]), Path(r["path"])) for r in rows]

    return SpeakerData(train=clips(split["train"]), heldout=clips(split["heldout"]),
                       token_shards=expand_shards(str(work / "tokens")), root=work)
