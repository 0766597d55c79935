"""The training metrics: the sums of a log window, the console line, TensorBoard and OUT/metrics.jsonl.

`MetricsLoggingMixin` holds the trainer's logging methods (mixed into `lm.training.trainer.Trainer`, whose
engine, ranks, run directory and writer they use).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


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


# the parts of the loss a log line shows
_LOSS_TERMS = (("ar_loss", "ar"), ("ar_delayed_loss", "ar delayed"), ("nar_loss", "nar"),
               ("advance_loss", "advance"))


def _fmt_loss(metrics: dict) -> str:
    """'loss 13.8569 (ar 6.9278, ar delayed 6.9291)': the total and the parts present."""
    terms = [f"{label} {metrics[key]:.4f}" for key, label in _LOSS_TERMS if key in metrics]
    return f"loss {metrics['loss']:.4f} ({', '.join(terms)})"


class MetricsLoggingMixin:
    """The trainer's logging: a window's sums all-reduced into metrics, the log line and the records."""

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
