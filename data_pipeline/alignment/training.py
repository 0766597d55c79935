"""Train the frame classifier on exactly timed synthetic speech (frame cross-entropy), resumable by epoch.

The checkpoint directory holds `last.pt` (weights, optimiser, epoch, RNG; read with weights_only=True);
the finished model goes to OUT as config.json + model.safetensors, the layout `Aligner.load` reads.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from data_pipeline.alignment.model import ClassifierConfig, FrameClassifier
from data_pipeline.alignment.synthetic_set import load_set

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_clips: int = 16
    crop_frames: int = 400
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1


def _batches(clips: list[tuple[np.ndarray, np.ndarray]], cfg: TrainConfig, rng: random.Random):
    order = list(range(len(clips)))
    rng.shuffle(order)
    for i in range(0, len(order), cfg.batch_clips):
        chosen = [clips[j] for j in order[i:i + cfg.batch_clips]]
        crops = []
        for feats, labels in chosen:
            start = rng.randrange(max(1, len(labels) - cfg.crop_frames + 1))
            crops.append((feats[start:start + cfg.crop_frames], labels[start:start + cfg.crop_frames]))
        width = max(len(lab) for _, lab in crops)
        x = np.zeros((len(crops), width, crops[0][0].shape[1]), np.float32)
        y = np.full((len(crops), width), -100, np.int64)
        for k, (f, lab) in enumerate(crops):
            x[k, : len(lab)], y[k, : len(lab)] = f, lab
        yield torch.from_numpy(x), torch.from_numpy(y)


def frame_accuracy(model: FrameClassifier, clips: list[tuple[np.ndarray, np.ndarray]]) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for feats, labels in clips:
            pred = model(torch.from_numpy(feats)[None])[0].argmax(-1).numpy()
            right += int((pred == labels).sum())
            total += len(labels)
    model.train()
    return right / max(total, 1)


def save_model(model: FrameClassifier, out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"classifier": model.cfg.to_dict(), **info}, indent=2) + "\n")


def train_classifier(train_dir: Path, heldout_dir: Path, ckpt_dir: Path, out: Path, cfg: TrainConfig,
                     model_cfg: ClassifierConfig | None = None,
                     limits: dict | None = None) -> FrameClassifier:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    clips = [(f, lab) for f, lab, _ in load_set(train_dir)]
    heldout = [(f, lab) for f, lab, _ in load_set(heldout_dir)]
    model = FrameClassifier(model_cfg or ClassifierConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(clips) // cfg.batch_clips)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    first = 0
    if (ckpt_dir / "last.pt").is_file():
        state = torch.load(ckpt_dir / "last.pt", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        first = int(state["epoch"]) + 1
        log.info("resumed after epoch %d", first - 1)
    log.info("%d training clips (%d frames), %d held-out; %d weights", len(clips),
             sum(len(lab) for _, lab in clips), len(heldout), sum(p.numel() for p in model.parameters()))
    for epoch in range(first, cfg.epochs):
        rng = random.Random(f"{cfg.seed}-{epoch}")
        start, losses = time.time(), []
        for x, y in _batches(clips, cfg, rng):
            loss = torch.nn.functional.nll_loss(model(x).transpose(1, 2), y, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        acc = frame_accuracy(model, heldout)
        log.info("epoch %d/%d: train loss %.3f, held-out frame accuracy %.3f (%.0f s)", epoch + 1, cfg.epochs,
                 float(np.mean(losses)), acc, time.time() - start)
        tmp = ckpt_dir / "last.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch}, tmp)
        tmp.replace(ckpt_dir / "last.pt")
    model.eval()
    info = {"train": asdict(cfg), "train_clips": len(clips),
            "heldout_frame_accuracy": round(frame_accuracy(model, heldout), 4)}
    if limits:
        info["limits"] = limits
    save_model(model, out, info)
    return model
