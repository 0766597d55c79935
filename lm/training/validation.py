"""Validation during training: token-weighted losses on held-out shards, and the text gap (the same batches
with every row given another row's transcript: how much the model reads its text).

`ValidationMixin` holds the trainer's validation methods (mixed into `lm.training.trainer.Trainer`, whose
engine, model, loaders and config they use).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from itertools import islice

import torch
import torch.distributed as dist

from data_pipeline.loading.loader import TokenLoader
from data_pipeline.records import TTSBatch
from lm.model.batch import LMBatch
from lm.model.vocab import IGNORE_INDEX
from lm.training.metrics import _fmt_loss

log = logging.getLogger(__name__)

# validation sums, all-reduced across ranks in this order; the _other_text ones come from the same batches
# with each row given another row's transcript
_TEXT_DEPENDENT = ("ar", "ar_n", "ar_delayed", "ar_delayed_n", "nar", "nar_n", "advance", "advance_n")
_EVAL_SUMS = ("batches", "align", *_TEXT_DEPENDENT, *(f"{k}_other_text" for k in _TEXT_DEPENDENT))


class ValidationMixin:
    """The trainer's validation pass."""

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
