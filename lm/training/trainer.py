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
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

from data_pipeline.loading.loader import LoaderConfig, TokenLoader
from lm.model.batch import (
    LMBatch,
    corrupt_target_codes,
    drop_target_phones,
    self_feed_target_codes,
)
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
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
from lm.training.metrics import MetricsLoggingMixin, Window
from lm.training.optimizer import WarmupCosine, param_groups
from lm.training.run_setup import (
    RunPaths,
    inspect_token_shards,
    model_config_for,
    prepare_tokenizer,
    split_train_val,
)
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
from lm.training.validation import ValidationMixin
from lm.training.warm_start import (
    check_init_codec,
    fast_forward_scheduler,
    init_tokenizer_path,
    load_init_weights,
)

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 143


@dataclass
class TrainResult:
    step: int
    stopped_by_signal: bool
    export_dir: Path | None
    last_metrics: dict
    engine: object = None  # the DeepSpeed engine (tests compare its module with the export)


class Trainer(ValidationMixin, MetricsLoggingMixin):
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
            lm = self._self_feed(lm)
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

    def _self_feed(self, lm: LMBatch) -> LMBatch:
        """data.self_feed: feed the AR some of its own teacher-forced draws as input codes."""
        data = self.cfg.data
        if data.self_feed <= 0:
            return lm
        on_device = lm.to(self.device)
        with torch.no_grad():
            logits = self.model.ar(on_device.input_ids, on_device.attention_mask, on_device.position_ids,
                                   delayed_ids=on_device.delayed_ids, phone_inputs=on_device.phone_inputs)
        return self_feed_target_codes(lm, logits, self.model.vocab, data.self_feed,
                                      data.self_feed_temperature, self.generator)

    def _losses(self, lm: LMBatch):
        align = self.cfg.align
        if align.weight <= 0:
            return tts_loss(self.engine(lm), lm, self.cfg.nar_weight)
        out = self.engine(lm, attention_layer=align.layer, attention_heads=align.heads)
        return tts_loss(out, lm, self.cfg.nar_weight, align.weight, align.sigma)

    def _lr(self) -> float:
        return float(self.engine.get_lr()[0])

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
