"""Train the TTS model with a DeepSpeed ZeRO engine, resume exactly, and export for inference.

    token shards --TokenLoader--> TTSBatch --model.build_batch--> LMBatch --engine--> AR + NAR loss
        every log.every steps:  one console line + TensorBoard + OUT/metrics.jsonl
        every eval_every:       validation loss on held-out shards
        every checkpoint_every: OUT/checkpoints/step_N (also at the end, and on SIGTERM)
        at max_steps:           OUT/export (lm/training/export.py)

Exact resume: a checkpoint holds the model, optimizer and scheduler (DeepSpeed), and per rank the loader
position, the python / numpy / torch RNG states and the generator that draws batch layouts (continuation
mode, NAR codebook). A resumed run therefore computes the same losses as an uninterrupted one, step for
step, given the same number of ranks and the same config.

Run directory:
    OUT/tokenizer.model  OUT/train_config.yaml  OUT/metrics.jsonl  OUT/tensorboard/  OUT/checkpoints/
    OUT/export/
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from data_pipeline.loader import LoaderConfig, TokenLoader
from data_pipeline.records import META_EXT, TTSBatch
from data_pipeline.sharding import expand_shards
from data_pipeline.text import TextTokenizer, iter_transcripts
from data_pipeline.token_codec import check_one_codec, sample_codec
from lm.model.config import ModelConfig
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.model.sequence import LMBatch, corrupt_target_codes, drop_target_phones
from lm.model.vocab import IGNORE_INDEX
from lm.training.config import TrainConfig, config_diff, dump_yaml
from lm.training.deepspeed_setup import (
    build_ds_config,
    full_fp32_state_dict,
    init_distributed,
    load_ds_config,
    resolve_precision,
    training_device,
    zero_stage,
)
from lm.training.elastic_resume import checkpoint_world_size, restore_at_new_world_size, universal_load_config
from lm.training.export import export_inference_dir
from lm.training.throughput import FlopCounter, peak_tflops
from lm.training.train_state import (
    ExtraState,
    latest_tag,
    list_tags,
    load_checkpoint,
    read_checkpoint_config,
    rng_state,
    save_checkpoint,
    set_rng_state,
    tag_for,
)
from lm.training.warm_start import (
    check_init_codec,
    fast_forward_scheduler,
    init_tokenizer_path,
    load_init_weights,
)

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 143


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


# ------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ShardInfo:
    """What the token shards say about the codec that made them."""

    codec: str
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    identity: str = ""  # codec/identity.py; the spec for shards made before identities were recorded


def inspect_token_shards(urls: list[str]) -> ShardInfo:
    """Codec spec, frame rate and code shape from the first readable sample's metadata. Every shard's first
    sample must come from the same codec (data_pipeline/token_codec.py): tokens of two codecs never mix."""
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


# ------------------------------------------------------------------------------------------- optimisation


@dataclass
class WarmupCosine:
    """lr multiplier at optimizer step s: linear warmup, then cosine to `min_ratio` at `total_steps`."""

    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear and embedding weights), none on norms, biases and other 1-d
    parameters (nanoGPT's rule)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


# ------------------------------------------------------------------------------------------------ metrics


@dataclass
class Window:
    """Sums over the optimizer steps since the last log line (this rank)."""

    steps: int = 0
    micro_batches: int = 0
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: int = 0
    frames: int = 0
    flops: float = 0.0
    seconds: float = 0.0
    grad_norm: float = 0.0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        self.micro_batches += 1
        for k, v in metrics.items():
            self.values[k] = self.values.get(k, 0.0) + v.detach().float()


@dataclass
class TrainResult:
    step: int
    stopped_by_signal: bool
    export_dir: Path | None
    last_metrics: dict
    engine: object = None  # the DeepSpeed engine (tests compare its module with the export)


def _fmt_count(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# ------------------------------------------------------------------------------------------------ trainer


class Trainer:
    """Owns the engine, the loaders and the run directory. `fit()` runs to `cfg.max_steps`."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, ds_config: str | Path, resume: bool = False):
        import deepspeed

        self.paths = RunPaths(Path(out_dir))
        self.rank, self.world_size, local_rank = init_distributed()
        _set_cpu_threads()
        self.device = training_device(local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.rank == 0:
            self.paths.root.mkdir(parents=True, exist_ok=True)
        dist.barrier()

        tag = latest_tag(self.paths.checkpoints)
        if tag is not None and not resume:
            raise FileExistsError(f"{self.paths.checkpoints} already holds checkpoints (newest {tag}): pass "
                                  f"--resume to continue that run, or choose another --out")
        if tag is None and list_tags(self.paths.checkpoints) and resume:
            raise FileNotFoundError(f"{self.paths.checkpoints} has checkpoint directories but no complete "
                                    f"one (no 'latest' pointer)")

        self.train_urls, self.val_urls = split_train_val(cfg, self.world_size)
        info = inspect_token_shards(self.train_urls)
        warm = tag is None and cfg.init_from is not None  # a fresh run from published weights
        if warm:
            check_init_codec(cfg.init_from, info.identity or info.codec, info.codec)
        if warm and cfg.tokenizer.path is None:
            tokenizer_cfg = dataclasses.replace(cfg.tokenizer, path=str(init_tokenizer_path(cfg.init_from)))
            cfg = dataclasses.replace(cfg, tokenizer=tokenizer_cfg)
        self.tokenizer = prepare_tokenizer(cfg, self.paths, self.train_urls, self.rank)
        model_cfg = model_config_for(cfg, self.tokenizer, info)
        schedule = dataclasses.replace(cfg.schedule, total_steps=cfg.schedule.total_steps or cfg.max_steps)
        self.cfg = cfg = dataclasses.replace(cfg, model=model_cfg, schedule=schedule,
                                             codec=cfg.codec or info.codec)
        self.info = info
        if tag is not None:
            self._warn_config_changes(read_checkpoint_config(self.paths.checkpoints, tag))
        if self.rank == 0:
            dump_yaml(cfg, self.paths.config, header=_launch_header(out_dir, ds_config))
            _truncate_metrics(self.paths.metrics, int(tag.split("_")[1]) if tag else 0)

        # identical initial weights on every rank; then per-rank streams for dropout and batch layouts
        torch.manual_seed(cfg.seed)
        model = TTSModel(model_cfg)
        init_step = load_init_weights(model, cfg.init_from) if warm else 0
        if cfg.activation_checkpointing:
            model.set_activation_checkpointing(True)
        self.flops = FlopCounter(model)
        counts = {part: model.num_parameters(part) / 1e6 for part in ("all", "ar", "nar")}  # before ZeRO-3
        self.ds_config = build_ds_config(load_ds_config(ds_config), cfg, self.precision, self.device)
        self.zero_stage = zero_stage(self.ds_config)
        # a checkpoint from another number of ranks loads via a universal checkpoint
        # (lm/training/elastic_resume.py)
        self.saved_world = checkpoint_world_size(self.paths.checkpoints / tag) if tag else None
        if self.saved_world not in (None, self.world_size) and self.zero_stage > 0:
            self.ds_config = universal_load_config(self.ds_config)
        sched = WarmupCosine(schedule.warmup_steps, schedule.total_steps, schedule.min_lr_ratio)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=param_groups(model, cfg.optim.weight_decay),
            config=self.ds_config,
            lr_scheduler=lambda opt: LambdaLR(opt, sched),
        )
        self.model: TTSModel = self.engine.module
        stream_seed = cfg.seed * 1000 + self.rank
        random.seed(stream_seed)
        np.random.seed(stream_seed % 2**32)
        torch.manual_seed(stream_seed)
        self.generator = torch.Generator().manual_seed(stream_seed)

        self.loader = TokenLoader(self._loader_config(self.train_urls, infinite=True), self.tokenizer.encode)
        self.step, self.tokens_seen = 0, 0
        if tag is not None:
            self._restore(tag)
        elif init_step:
            fast_forward_scheduler(self.engine.lr_scheduler, init_step)
            self.step = init_step
            # DeepSpeed counts its own steps and a resume checks them against ours: without this, a
            # warm-started run's checkpoints could never be resumed ("DeepSpeed is at step 300, ours at 1800")
            self.engine.global_steps = init_step
        elif resume:
            log.info("--resume: no checkpoint in %s yet, starting from step 0", self.paths.checkpoints)
        self.train_iter: Iterator = iter(self.loader)

        self.peak = peak_tflops(self.device, cfg.log.peak_tflops)
        self.writer = None
        if self.rank == 0 and cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.paths.tensorboard))
        self._stop_requested = False
        log.info("model %s: %.2fM parameters (AR %.2fM, NAR %.2fM) | text vocab %d | %d codebooks x %d | "
                 "codec %s", cfg.preset, counts["all"], counts["ar"], counts["nar"],
                 model_cfg.text_vocab_size, model_cfg.num_codebooks, model_cfg.codebook_size, cfg.codec)
        log.info("DeepSpeed ZeRO-%d | %s | %d rank(s) on %s | %d train shards (split by %s), %d validation "
                 "shards | grad accumulation %d", self.zero_stage, self.precision, self.world_size,
                 self.device.type, len(self.train_urls), self.loader.split, len(self.val_urls),
                 cfg.gradient_accumulation_steps)

    # -- setup helpers
    def _loader_config(self, urls: list[str], infinite: bool) -> LoaderConfig:
        data = self.cfg.data
        if infinite:
            return LoaderConfig(shards=urls, batching=data.batching, infinite=True,
                                shuffle_buffer=data.shuffle_buffer, seed=self.cfg.seed,
                                num_workers=data.num_workers, num_codebooks=self.cfg.model.num_codebooks,
                                rank=self.rank, world_size=self.world_size)
        # validation: every rank reads the same ordered pass and takes every world_size-th batch
        return LoaderConfig(shards=urls, batching=data.batching, infinite=False, shuffle_shards=False,
                            shuffle_buffer=0, seed=self.cfg.seed, num_workers=0,
                            num_codebooks=self.cfg.model.num_codebooks, rank=0, world_size=1)

    def _warn_config_changes(self, saved: TrainConfig) -> None:
        diff = {k: v for k, v in config_diff(saved, self.cfg).items() if k != "max_steps"}
        if diff:
            log.warning("resuming with a config that differs from the checkpoint's (the continuation is not "
                        "exact): %s", ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items()))

    def _restore(self, tag: str) -> None:
        if self.saved_world != self.world_size:
            self.step, self.tokens_seen = restore_at_new_world_size(
                self.engine, self.loader, self.generator, self.paths.checkpoints, tag, self.zero_stage,
                self.cfg.seed, self.cfg.gradient_accumulation_steps)
            return
        extra = load_checkpoint(self.engine, self.paths.checkpoints, tag)
        self.loader.load_state_dict(extra["loader"])
        set_rng_state(extra["rng"], self.generator)
        self.step, self.tokens_seen = int(extra["step"]), int(extra["tokens_seen"])
        log.info("resumed from %s at step %d", self.paths.checkpoints / tag, self.step)

    # -- one optimizer step
    def _train_step(self, window: Window) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        for _ in range(cfg.gradient_accumulation_steps):
            batch = next(self.train_iter)
            lm = self.model.build_batch(batch, cfg.data.continuation_prob, self.generator)
            lm = corrupt_target_codes(lm, self.model.vocab, cfg.data.code_noise, self.generator)
            lm = drop_target_phones(lm, cfg.data.phone_dropout, self.generator)
            window.tokens += int(lm.attention_mask.sum())
            window.frames += int(batch.frame_lengths.sum())
            window.flops += self.flops(lm)
            lm = lm.to(self.device)
            losses = self._losses(lm)
            self.engine.backward(losses.loss)
            self.engine.step()
            window.add(losses.metrics)
        norm = self.engine.get_global_grad_norm()
        window.grad_norm += float(norm) if norm is not None else float("nan")
        window.steps += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        window.seconds += time.perf_counter() - start

    def _losses(self, lm: LMBatch):
        align = self.cfg.align
        if align.weight <= 0:
            return tts_loss(self.engine(lm), lm, self.cfg.nar_weight)
        out = self.engine(lm, attention_layer=align.layer, attention_heads=align.heads)
        return tts_loss(out, lm, self.cfg.nar_weight, align.weight, align.sigma)

    def _lr(self) -> float:
        return float(self.engine.get_lr()[0])

    # -- logging
    def _reduce_window(self, window: Window) -> dict:
        keys = sorted(window.values)
        local = [window.values[k] for k in keys] + [torch.tensor(float(x)) for x in (
            window.micro_batches, window.tokens, window.frames, window.flops)]
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in
                              (t.double().cpu() for t in local)]).to(self.device)
        dist.all_reduce(packed)
        packed = packed.cpu().tolist()
        micro = packed[len(keys)]
        out = {k: packed[i] / micro for i, k in enumerate(keys)}
        tokens, frames, flops = packed[len(keys) + 1 :]
        seconds = max(window.seconds, 1e-9)
        out.update(tokens_per_s=tokens / seconds, frames_per_s=frames / seconds,
                   seconds_per_step=seconds / window.steps, grad_norm=window.grad_norm / window.steps)
        if self.peak is not None:
            out["mfu"] = flops / seconds / (self.peak * 1e12 * self.world_size)
        self.tokens_seen += int(tokens)
        return out

    def _log_train(self, window: Window, lr: float) -> dict:
        metrics = self._reduce_window(window)
        metrics["lr"] = lr
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"non-finite training loss at step {self.step} ({metrics}); resume from "
                                     f"the last checkpoint with a lower optim.lr")
        if self.rank == 0:
            left = (self.cfg.max_steps - self.step) * metrics["seconds_per_step"]
            parts = [f"step {self.step}/{self.cfg.max_steps}", _fmt_loss(metrics),
                     *([f"align {metrics['align_loss']:.3f}"] if "align_loss" in metrics else []),
                     f"lr {lr:.2e}", f"gnorm {metrics['grad_norm']:.3f}",
                     f"{_fmt_count(metrics['tokens_per_s'])} tok/s",
                     f"{metrics['seconds_per_step']:.2f} s/step"]
            if "mfu" in metrics:
                parts.append(f"mfu {100 * metrics['mfu']:.1f}%")
            parts.append(f"eta {_fmt_eta(left)}")
            log.info(" | ".join(parts))
            self._record("train", metrics)
        return metrics

    def _record(self, split: str, metrics: dict) -> None:
        with open(self.paths.metrics, "a") as f:
            f.write(json.dumps({"split": split, "step": self.step, **metrics}) + "\n")
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{split}/{k}", v, self.step)
            self.writer.flush()

    # -- validation
    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Token-weighted AR / NAR loss over the first `eval_batches` validation batches (split across ranks).
        The batch layouts come from a fixed generator, so every pass measures the same thing."""
        if not self.val_urls:
            return None
        start = time.perf_counter()
        loader = TokenLoader(self._loader_config(self.val_urls, infinite=False), self.tokenizer.encode)
        raw = list(islice(loader, self.cfg.eval_batches))
        generator = torch.Generator().manual_seed(self.cfg.seed)
        built = [self.model.build_batch(b, self.cfg.data.continuation_prob, generator) for b in raw]
        # the same batches with each row given another row's transcript (same layout draws): the AR loss
        # gap says how much the model reads the text; ~0 means an audio LM that has not aligned yet
        generator = torch.Generator().manual_seed(self.cfg.seed)
        other_text = [self.model.build_batch(b, self.cfg.data.continuation_prob, generator)
                      for b in _rolled_texts(raw)]
        mine = built[self.rank :: self.world_size]
        sums = dict.fromkeys(_EVAL_SUMS, 0.0)
        self.engine.eval()
        for lm in mine:
            for key, value in self._eval_sums(lm).items():
                sums[key] += value
        for lm in other_text[self.rank :: self.world_size]:
            for key, value in self._eval_sums(lm).items():
                if key in _TEXT_DEPENDENT:
                    sums[f"{key}_other_text"] += value
        if self.zero_stage == 3 and built:
            # ZeRO-3 gathers parameters collectively: every rank runs the same number of forwards
            most = torch.tensor([len(mine)], device=self.device)
            dist.all_reduce(most, op=dist.ReduceOp.MAX)
            for _ in range(int(most) - len(mine)):
                self.engine(built[0].to(self.device))
        self.engine.train()
        reduced = torch.tensor([sums[k] for k in _EVAL_SUMS], dtype=torch.float64, device=self.device)
        dist.all_reduce(reduced)
        sums = dict(zip(_EVAL_SUMS, reduced.cpu().tolist(), strict=True))
        if sums["ar_n"] == 0:
            log.warning("validation shards %s gave no batch", self.val_urls)
            return None
        batches = sums["batches"]
        metrics = {
            "ar_loss": sums["ar"] / sums["ar_n"],
            "batches": batches,
            "seconds": time.perf_counter() - start,
        }
        for name in ("nar", "ar_delayed", "advance"):
            if sums[f"{name}_n"]:
                metrics[f"{name}_loss"] = sums[name] / sums[f"{name}_n"]
        nar_part = self.cfg.nar_weight * metrics.get("nar_loss", 0.0)
        metrics["loss"] = (metrics["ar_loss"] + metrics.get("ar_delayed_loss", 0.0) + nar_part
                           + metrics.get("advance_loss", 0.0))
        if self.cfg.align.weight > 0 and batches:
            metrics["align_loss"] = sums["align"] / batches  # per-batch mean, like the loss
        # text_gap (codebook 1), and the same question for the AR's delayed codebooks and the NAR
        for name, gap in (("ar", "text_gap"), ("ar_delayed", "ar_delayed_text_gap"), ("nar", "nar_text_gap")):
            if sums[f"{name}_n"] and sums[f"{name}_n_other_text"]:
                metrics[f"{name}_loss_other_text"] = sums[f"{name}_other_text"] / sums[f"{name}_n_other_text"]
                metrics[gap] = metrics[f"{name}_loss_other_text"] - metrics[f"{name}_loss"]
        if self.rank == 0:
            log.info("validation step %d | %s | text gap %s%s%s%s | %d batches | %.1f s",
                     self.step, _fmt_loss(metrics),
                     f"{metrics['text_gap']:.3f} nats" if "text_gap" in metrics else "n/a",
                     f" (ar delayed {metrics['ar_delayed_text_gap']:.3f})"
                     if "ar_delayed_text_gap" in metrics else "",
                     f" (nar {metrics['nar_text_gap']:.3f})" if "nar_text_gap" in metrics else "",
                     f" | align {metrics['align_loss']:.3f}" if "align_loss" in metrics else "", batches,
                     metrics["seconds"])
            self._record("val", metrics)
        return metrics

    def _eval_sums(self, lm: LMBatch) -> dict[str, float]:
        """Token-weighted loss sums of one validation batch (the keys of _EVAL_SUMS without _other_text)."""
        lm = lm.to(self.device)
        losses = self._losses(lm)
        counts = {"ar": lm.labels, "nar": lm.nar.labels if lm.nar is not None else None,
                  "ar_delayed": lm.delayed_labels, "advance": lm.advance_labels}
        sums = {"batches": 1.0, "align": float(losses.metrics.get("align_loss", 0.0))}
        for name, labels in counts.items():
            n = float((labels != IGNORE_INDEX).sum()) if labels is not None else 0.0
            loss = losses.metrics.get(f"{name}_loss")
            sums[name] = float(loss) * n if n and loss is not None else 0.0
            sums[f"{name}_n"] = n
        return sums

    # -- checkpoints, signals, export
    def save(self) -> Path:
        extra = ExtraState(step=self.step, loader=self.loader.state_dict(), rng=rng_state(self.generator),
                           tokens_seen=self.tokens_seen)
        return save_checkpoint(self.engine, self.paths.checkpoints, self.cfg, extra,
                               self.cfg.keep_checkpoints)

    def _on_sigterm(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if not self._stop_requested:
            log.warning("SIGTERM: stopping after this step with a checkpoint")
        self._stop_requested = True

    def _stop_agreed(self) -> bool:
        """Whether any rank got SIGTERM (all ranks must checkpoint together)."""
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def export(self) -> Path:
        state = full_fp32_state_dict(self.engine)  # collective under ZeRO
        if self.rank == 0:
            export_inference_dir(
                self.paths.export, self.cfg.model, state, self.paths.tokenizer, self.cfg.codec,
                train_config=self.cfg,
                metadata={"frame_rate": self.info.frame_rate, "train_step": self.step,
                          "preset": self.cfg.preset, "run_dir": str(self.paths.root.resolve()),
                          "init_from": self.cfg.init_from},
            )
        dist.barrier()
        return self.paths.export

    # -- the loop
    def fit(self) -> TrainResult:
        cfg = self.cfg
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        window, metrics, saved_at, stopped = Window(), {}, None, False
        log.info("training from step %d to %d", self.step, cfg.max_steps)
        try:
            while self.step < cfg.max_steps:
                lr = self._lr()
                self._train_step(window)
                self.step += 1
                if self.step % cfg.log.every == 0 or self.step == cfg.max_steps:
                    metrics = self._log_train(window, lr)
                    window = Window()
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                stopped = self._stop_agreed()
                if stopped or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                    self.save()
                    saved_at = self.step
                if stopped:
                    log.warning("stopped by SIGTERM at step %d; continue with --resume", self.step)
                    return TrainResult(self.step, True, None, metrics, self.engine)
            if saved_at != self.step and latest_tag(self.paths.checkpoints) != tag_for(self.step):
                self.save()  # the final state, so `--resume --max-steps LONGER` can continue
            export_dir = self.export() if cfg.export else None
            return TrainResult(self.step, False, export_dir, metrics, self.engine)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if self.writer is not None:
                self.writer.close()


def train(cfg: TrainConfig, out_dir: str | Path, ds_config: str | Path, resume: bool = False) -> TrainResult:
    """Build a Trainer and run it (see the module docstring)."""
    return Trainer(cfg, out_dir, ds_config, resume=resume).fit()


def _set_cpu_threads() -> None:
    """On CPU, share the cores between the local ranks unless OMP_NUM_THREADS says otherwise."""
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the step the run (re)starts from: a resumed run logs them again."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _launch_header(out_dir: str | Path, ds_config: str | Path) -> str:
    return ("# resolved training config; rerun or continue with:\n"
            f"#   deepspeed scripts/train.py --out {out_dir} --deepspeed {ds_config} --config "
            f"{Path(out_dir) / 'train_config.yaml'} --resume")


# the parts of the loss a log line shows
_LOSS_TERMS = (("ar_loss", "ar"), ("ar_delayed_loss", "ar delayed"), ("nar_loss", "nar"),
               ("advance_loss", "advance"))


def _fmt_loss(metrics: dict) -> str:
    """'loss 13.8569 (ar 6.9278, ar delayed 6.9291)': the total and the parts present."""
    terms = [f"{label} {metrics[key]:.4f}" for key, label in _LOSS_TERMS if key in metrics]
    return f"loss {metrics['loss']:.4f} ({', '.join(terms)})"

# validation sums, all-reduced across ranks in this order; the _other_text ones come from the same batches
# with each row given another row's transcript
_TEXT_DEPENDENT = ("ar", "ar_n", "ar_delayed", "ar_delayed_n", "nar", "nar_n", "advance", "advance_n")
_EVAL_SUMS = ("batches", "align", *_TEXT_DEPENDENT, *(f"{k}_other_text" for k in _TEXT_DEPENDENT))


def rescale_durations(durations: torch.Tensor, frames: int) -> torch.Tensor:
    """Frames per phone [P] stretched to sum to `frames`, each phone keeping >= 1 frame where it can."""
    n = durations.numel()
    ends = torch.round(torch.cumsum(durations.double(), 0) * frames / max(int(durations.sum()), 1)).long()
    bounds = torch.cat([ends.new_zeros(1), ends]).clamp(0, frames)
    bounds[-1] = frames
    if n <= frames:
        for i in range(1, n):
            bounds[i] = max(int(bounds[i]), int(bounds[i - 1]) + 1)
        for i in range(n - 1, 0, -1):
            bounds[i] = min(int(bounds[i]), int(bounds[i + 1]) - 1)
    return torch.diff(bounds)


def _rolled_texts(batches: list[TTSBatch]) -> list[TTSBatch]:
    """The batches with every row's transcript (and, with phone alignments, its phones re-timed to this
    row's frames) moved to the next row (across batch borders, so batches of one row work too); fewer than
    two rows in all -> []."""
    rows = [(b.text_ids[i, : int(b.text_lengths[i])], b.texts[i] if b.texts else "",
             _phones_of(b, i)) for b in batches for i in range(len(b.keys))]
    if len(rows) < 2:
        return []
    rows = rows[-1:] + rows[:-1]
    out, start = [], 0
    for b in batches:
        mine, start = rows[start : start + len(b.keys)], start + len(b.keys)
        lengths = torch.tensor([len(ids) for ids, _, _ in mine], dtype=b.text_lengths.dtype)
        ids = torch.zeros(len(mine), int(lengths.max()), dtype=b.text_ids.dtype)
        for i, (row, _, _) in enumerate(mine):
            ids[i, : len(row)] = row
        changes = {}
        if b.phone_ids is not None:
            changes = _rolled_phones(b, [p for _, _, p in mine])
        out.append(dataclasses.replace(b, text_ids=ids, text_lengths=lengths,
                                       texts=[t for _, t, _ in mine] if b.texts else b.texts, **changes))
    return out


def _phones_of(b: TTSBatch, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if b.phone_ids is None:
        return None
    n = int(b.phone_lengths[i])
    return b.phone_ids[i, :n], b.phone_durations[i, :n]


def _rolled_phones(b: TTSBatch, phones: list) -> dict:
    """Another row's phones on this batch's rows, each re-timed to the row's own target frames."""
    size = len(b.keys)
    width = max([p[0].numel() for p in phones if p is not None] + [1])
    ids = torch.zeros(size, width, dtype=torch.long)
    durations = torch.zeros(size, width, dtype=torch.long)
    lengths = torch.zeros(size, dtype=torch.long)
    frame_phones = torch.zeros_like(b.frame_phones)
    for i, p in enumerate(phones):
        if p is None or p[0].numel() == 0:
            continue
        frames = int(b.frame_lengths[i])
        d = rescale_durations(p[1], frames)
        n = p[0].numel()
        ids[i, :n], durations[i, :n], lengths[i] = p[0], d, n
        frame_phones[i, :frames] = torch.repeat_interleave(p[0], d)
    return {"phone_ids": ids, "phone_durations": durations, "phone_lengths": lengths,
            "frame_phones": frame_phones}
