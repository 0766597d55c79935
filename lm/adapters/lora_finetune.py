"""Fine-tune a LoRA adapter on one speaker with DeepSpeed; evaluate as it goes and keep the best adapter.

    step 0            evaluate the untouched base (the adapter starts with B = 0): the zero-shot baseline
    every eval_every  evaluate -> curve point -> `lm.adapters.lora.select_best` -> OUT/adapter when it is the
                      best so far; stop when `patience` evaluations brought no better one
    max_steps / time  a last evaluation, then stop
    files             OUT/adapter/ (peft + base_model.json), OUT/curve.jsonl, OUT/curve.md

The evaluation itself (synthesis + SIM + WER) is a callback: `lm` cannot import the evaluation package, and
only rank 0 runs it while the other ranks wait. One process (a world of one, gloo on CPU) or the `deepspeed`
launcher; ZeRO stage 0-2 (the frozen base is replicated on every rank; ZeRO-3 would also partition it, and
generation reads weights outside module calls).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from data_pipeline.loading.batching import BatchingConfig
from data_pipeline.loading.loader import LoaderConfig, TokenLoader
from lm.adapters.lora import (
    DTYPES,
    CurvePoint,
    LoraSettings,
    attach_lora,
    curve_markdown,
    save_adapter,
    select_best,
    tts_model,
)
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.training.config import OptimConfig, TrainConfig
from lm.training.deepspeed_setup import (
    build_ds_config,
    load_ds_config,
    resolve_precision,
    training_device,
    zero_stage,
)
from lm.training.optimizer import WarmupCosine, param_groups

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
CURVE_JSONL = "curve.jsonl"
CURVE_MD = "curve.md"

# (the model with the current adapter, in eval mode; the step) -> {"sim": float, "wer": float, ...}
Evaluator = Callable[[TTSModel, int], dict[str, Any]]


@dataclass
class FinetuneConfig:
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_steps: int = 200
    eval_every: int = 25  # 0: no evaluation; the adapter of the last step is kept
    patience: int = 4  # evaluations without a better adapter before stopping; 0: never stop early
    wer_margin: float = 0.05  # an adapter whose WER exceeds the baseline's by more is never kept
    min_delta: float = 0.0  # SIM gain needed to count as better
    time_budget_s: float | None = None  # stop (after a last evaluation) before this much wall time
    lr: float = 1e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    gradient_accumulation_steps: int = 1
    nar_weight: float = 1.0
    continuation_prob: float = 0.25  # as in base training: both prompt modes keep working
    batching: BatchingConfig = field(default_factory=lambda: BatchingConfig(max_frames=1500))
    shuffle_buffer: int = 64
    seed: int = 1234
    precision: str = "auto"
    adapter_dtype: str = "float32"  # how the adapter is stored: float32 | float16 | bfloat16

    def train_config(self) -> TrainConfig:
        """The settings `lm.training.deepspeed_setup.build_ds_config` reads (optimizer, clipping,
        accumulation)."""
        optim = OptimConfig(lr=self.lr, weight_decay=self.weight_decay, grad_clip=self.grad_clip)
        return TrainConfig(optim=optim, gradient_accumulation_steps=self.gradient_accumulation_steps,
                           seed=self.seed, precision=self.precision, nar_weight=self.nar_weight)


@dataclass
class FinetuneResult:
    curve: list[CurvePoint]
    best: int  # index into curve (0: the baseline was not beaten)
    steps: int
    stop_reason: str  # "max_steps" | "early_stop" | "time_budget"
    adapter_dir: Path


class LoraFinetuner:
    """Owns the engine, the loader and the curve. Build it on every rank; `run()` trains."""

    def __init__(self, model: TTSModel, token_shards: Sequence[str], text_encoder: Callable[[str], list[int]],
                 cfg: FinetuneConfig, ds_config: str | Path, out_dir: str | Path, identity: dict[str, Any],
                 evaluate: Evaluator | None = None) -> None:
        import deepspeed

        if not dist.is_initialized():
            raise RuntimeError("call lm.training.deepspeed_setup.init_distributed() first (a world of one is "
                               "fine)")
        self.cfg, self.out, self.identity, self.evaluate = cfg, Path(out_dir), identity, evaluate
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = training_device(int(os.environ.get("LOCAL_RANK", 0)))
        precision = resolve_precision(cfg.precision, self.device)
        ds = build_ds_config(load_ds_config(ds_config), cfg.train_config(), precision, self.device)
        if zero_stage(ds) > 2:
            raise ValueError(f"{ds_config}: ZeRO stage {zero_stage(ds)}; LoRA fine-tuning supports stages "
                             f"0-2 (the adapter is small; use ds_configs/zero2.json)")
        torch.manual_seed(cfg.seed)  # the same LoRA A init on every rank
        self.peft = attach_lora(model, cfg.lora)
        sched = WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.peft, model_parameters=param_groups(self.peft, cfg.weight_decay), config=ds,
            lr_scheduler=lambda opt: LambdaLR(opt, sched))
        loader_cfg = LoaderConfig(shards=list(token_shards), batching=cfg.batching, infinite=True,
                                  shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed,
                                  num_codebooks=model.config.num_codebooks, rank=self.rank,
                                  world_size=self.world_size)
        self.loader = TokenLoader(loader_cfg, text_encoder)
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)
        self.curve: list[CurvePoint] = []
        self.best = 0
        self.start = time.perf_counter()
        self.last_eval_s = self.last_step_s = 0.0

    @property
    def adapter_dir(self) -> Path:
        return self.out / ADAPTER_DIR

    # -- training
    def _train_step(self, batches) -> float:
        losses = []
        for _ in range(self.cfg.gradient_accumulation_steps):
            lm = self.tts.build_batch(next(batches), self.cfg.continuation_prob, self.generator)
            lm = lm.to(self.device)
            loss = tts_loss(self.engine(lm), lm, self.cfg.nar_weight).loss
            self.engine.backward(loss)
            self.engine.step()
            losses.append(float(loss.detach()))
        return sum(losses) / len(losses)

    @property
    def tts(self) -> TTSModel:
        return tts_model(self.engine.module)

    def _adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA weights (fp32 masters where DeepSpeed keeps them). Collective: every rank calls it."""
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        for name, param in self.engine.module.named_parameters():
            if param.requires_grad:
                full = safe_get_full_fp32_param(param)
                state[name] = (param if full is None else full).detach().float().cpu().clone()
        return state

    def _agree(self, flag: bool) -> bool:
        """True on every rank when it is True on any (rank 0 decides stops; all ranks must follow)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    # -- evaluation and selection (rank 0), adapter saving
    def _checkpoint(self, step: int, train_loss: float | None) -> bool:
        """Evaluate (rank 0), update the curve, save the adapter when it is the new best. -> stop early?"""
        state = self._adapter_state()
        stop = False
        if self.rank == 0:
            if self.evaluate is None or self.cfg.eval_every == 0:
                self._save(state, step, {})
            else:
                stop = self._evaluate(step, train_loss, state)
        dist.barrier()
        return self._agree(stop)

    def _evaluate(self, step: int, train_loss: float | None, state: dict[str, torch.Tensor]) -> bool:
        began = time.perf_counter()
        self.engine.eval()
        try:
            with keep_trainable_storage(self.engine.module):
                scores = self.evaluate(self.tts, step)
        finally:
            self.tts.ar.free_cache()
            self.engine.train()
        self.last_eval_s = time.perf_counter() - began
        extra = {k: v for k, v in scores.items() if k not in ("sim", "wer")}
        point = CurvePoint(step=step, sim=float(scores["sim"]), wer=float(scores["wer"]),
                           train_loss=train_loss, seconds=time.perf_counter() - self.start,
                           extra={**extra, "eval_s": self.last_eval_s})
        self.curve.append(point)
        sel = select_best(self.curve, self.cfg.wer_margin, self.cfg.patience, self.cfg.min_delta)
        if sel.best == len(self.curve) - 1:
            self.best = sel.best
            self._save(state, step, {"sim": point.sim, "wer": point.wer})
        self._write_curve()
        note = f" | stopping: no better adapter for {sel.since_improvement} evaluations" if sel.stop else ""
        log.info("step %d: SIM %.4f, WER %.1f%% (baseline %.4f, %.1f%%) | best step %d | %.0f s eval%s", step,
                 point.sim, 100 * point.wer, self.curve[0].sim, 100 * self.curve[0].wer,
                 self.curve[self.best].step, self.last_eval_s, note)
        return sel.stop

    def _save(self, state: dict[str, torch.Tensor], step: int, scores: dict) -> None:
        save_adapter(self.engine.module, self.adapter_dir, self.identity, state_dict=state,
                     extra={"step": step, **scores}, dtype=DTYPES[self.cfg.adapter_dtype])

    def _write_curve(self) -> None:
        rows = "".join(json.dumps(json_safe(p.to_dict())) + "\n" for p in self.curve)
        (self.out / CURVE_JSONL).write_text(rows)
        (self.out / CURVE_MD).write_text(curve_markdown(self.curve, self.best))

    def _out_of_time(self) -> bool:
        """Whether one more step and then the last evaluation (20 % slack: evaluations vary) would overrun."""
        budget = self.cfg.time_budget_s
        if self.rank != 0 or budget is None:
            return False
        return time.perf_counter() - self.start + self.last_step_s + 1.2 * self.last_eval_s >= budget

    # -- the loop
    def run(self) -> FinetuneResult:
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        evaluating = cfg.eval_every > 0
        reason = "early_stop" if evaluating and self._checkpoint(0, None) else "max_steps"
        batches = iter(self.loader)
        step, window, evaluated_at = 0, [], 0
        bar = tqdm(total=cfg.max_steps, desc="lora", unit="step", disable=self.rank != 0)
        while reason == "max_steps" and step < cfg.max_steps:
            if self._agree(self._out_of_time()):
                log.warning("time budget of %.0f s reached at step %d", cfg.time_budget_s, step)
                reason = "time_budget"
                break
            began = time.perf_counter()
            window.append(self._train_step(batches))
            self.last_step_s = time.perf_counter() - began
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]:.3f}", refresh=False)
            if evaluating and step % cfg.eval_every == 0:
                if self._checkpoint(step, _mean(window)):
                    reason = "early_stop"
                window, evaluated_at = [], step
        bar.close()
        if not evaluating or evaluated_at != step:  # the last steps are not evaluated (or saved) yet
            self._checkpoint(step, _mean(window))
        return FinetuneResult(curve=self.curve, best=self.best, steps=step, stop_reason=reason,
                              adapter_dir=self.adapter_dir)


@contextlib.contextmanager
def keep_trainable_storage(module: torch.nn.Module) -> Iterator[None]:
    """Rebind every trainable parameter to the storage it had before the block, if the block gave it new
    storage with the same values. DeepSpeed ZeRO-1/2 keeps a trainable parameter's data as a view into its
    flat buffer; generation may re-lay weights out for speed (`lm.inference.decode_steps.cpu_decode_layout`
    makes wide Linears column-major, LoRA's B matrices included), which would detach the model from the
    optimizer's updates and make the gradient unflattenable."""
    saved = [(p, p.data) for p in module.parameters() if p.requires_grad]
    try:
        yield
    finally:
        for param, data in saved:
            if param.data.data_ptr() != data.data_ptr() or param.data.stride() != data.stride():
                if not torch.equal(param.data, data):
                    raise RuntimeError("evaluation changed the values of a trainable parameter")
                param.data = data


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def json_safe(value: Any) -> Any:
    """Plain JSON: non-finite floats -> None (JSON has no NaN), numpy / torch scalars -> numbers, paths ->
    strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
