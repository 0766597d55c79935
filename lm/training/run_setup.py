"""What a training run settles before its first step: the run directory's layout, the codec the token shards
were made with, the train / validation split of the shards, the run's text tokenizer, and the model config
the data dictates.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from data_pipeline.records import META_EXT
from data_pipeline.sharding import expand_shards
from data_pipeline.text.tokenizer import TextTokenizer
from data_pipeline.text.training_text import iter_transcripts
from data_pipeline.tokens.token_codec import check_one_codec, sample_codec
from lm.model.config import ModelConfig
from lm.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class RunPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.model"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "train_config.yaml"


@dataclass(frozen=True)
class ShardInfo:
    """What the token shards say about the codec that made them."""

    codec: str
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    identity: str = ""  # codec/identity.py (data_pipeline.tokens.token_codec.sample_codec)


def inspect_token_shards(urls: list[str]) -> ShardInfo:
    """Codec spec, frame rate and code shape from the first readable sample's metadata. Every shard's first
    sample must come from the same codec (data_pipeline/tokens/token_codec.py): tokens of two codecs never
    mix."""
    info, codecs = None, {}
    for url in urls:
        try:
            stream = gopen(url, "rb")
            try:
                for sample in group_by_keys(tar_file_expander([{"url": url, "stream": stream}])):
                    if META_EXT not in sample:
                        continue
                    meta = json.loads(sample[META_EXT])
                    codecs[url] = sample_codec(meta)
                    if info is None:
                        size = meta.get("extra", {}).get("codebook_size")
                        if not size:
                            raise ValueError(f"sample {sample['__key__']} has no extra.codebook_size")
                        info = ShardInfo(codec=str(meta["codec"]), frame_rate=float(meta["frame_rate"]),
                                         num_codebooks=int(meta["num_codebooks"]), codebook_size=int(size),
                                         identity=codecs[url])
                    break
            finally:
                stream.close()
        except Exception as err:  # noqa: BLE001 - try the next shard, say why
            log.warning("cannot read codec metadata from token shard %s: %s", url, err)
    if info is None:
        raise ValueError(f"no readable token sample with codec metadata in {len(urls)} shards "
                         f"({urls[:3]} ...)")
    check_one_codec(codecs)
    return info


def split_train_val(cfg: TrainConfig, world_size: int) -> tuple[list[str], list[str]]:
    """Training shards and validation shards (explicit `data.val`, else the last `data.val_shards`)."""
    data = cfg.data
    if not data.train:
        raise ValueError("no training data: pass --data DIR (token shards) or set data.train")
    shards = expand_shards(data.train)
    if not shards:
        raise ValueError(f"no token shards (*.tar) in {data.train}")
    if data.val:
        val = expand_shards(data.val)
        if not val:
            raise ValueError(f"no validation shards in {data.val}")
        return shards, val
    if cfg.eval_every == 0 or data.val_shards == 0:
        return shards, []
    needed = world_size * max(1, data.num_workers)
    if len(shards) - data.val_shards < needed:
        log.warning("only %d token shard(s): holding out %d for validation would leave %d for training, "
                    "fewer than ranks x workers = %d; validation is off (set data.val to a separate set)",
                    len(shards), data.val_shards, max(0, len(shards) - data.val_shards), needed)
        return shards, []
    return shards[: -data.val_shards], shards[-data.val_shards :]


def prepare_tokenizer(cfg: TrainConfig, paths: RunPaths, train_urls: list[str], rank: int) -> TextTokenizer:
    """The run's text tokenizer at OUT/tokenizer.model: kept when present (resume), else copied from
    `tokenizer.path`, else trained by rank 0 on the training shards' transcripts."""
    if rank == 0 and not paths.tokenizer.is_file():
        if cfg.tokenizer.path:
            TextTokenizer.load(cfg.tokenizer.path).save(paths.tokenizer)
            log.info("text tokenizer: %s (copied to %s)", cfg.tokenizer.path, paths.tokenizer)
        else:
            remote = [u for u in train_urls if "://" in u or u.startswith("pipe:")]
            if remote:
                raise ValueError(f"cannot train a text tokenizer on remote shards ({remote[0]}); train one "
                                 f"with scripts/train_text_tokenizer.py and pass tokenizer.path=FILE")
            texts = (t for url in train_urls for t in iter_transcripts(url))
            start = time.perf_counter()
            tok = TextTokenizer.train(texts, out_path=paths.tokenizer, vocab_size=cfg.tokenizer.vocab_size,
                                      frontend=cfg.tokenizer.frontend)
            log.info("trained a %d-piece text tokenizer on %d shards in %.1f s -> %s", tok.vocab_size,
                     len(train_urls), time.perf_counter() - start, paths.tokenizer)
    dist.barrier()
    tok = TextTokenizer.load(paths.tokenizer)
    if cfg.tokenizer.frontend and tok.frontend != cfg.tokenizer.frontend:
        raise ValueError(f"tokenizer.frontend={cfg.tokenizer.frontend!r}, but {paths.tokenizer} was built "
                         f"with front end {tok.frontend!r}: start a new run directory")
    return tok


def model_config_for(cfg: TrainConfig, tokenizer: TextTokenizer, info: ShardInfo) -> ModelConfig:
    """The preset's dimensions with the vocabulary sizes the data dictates."""
    q = cfg.data.num_codebooks or info.num_codebooks
    if q > info.num_codebooks:
        raise ValueError(f"data.num_codebooks={q}, but the shards hold only {info.num_codebooks} codebooks")
    return cfg.model.replace(text_vocab_size=tokenizer.vocab_size, num_codebooks=q,
                             codebook_size=info.codebook_size)
