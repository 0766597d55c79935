"""Training loop for `RVQCodec`: in-memory audio pool, on-device crops and augmentation, checkpoints with
resume, periodic STOI on held-out clips, export to a codec checkpoint directory.

Run through `scripts/train_codec.py`; `init_from` starts a run from an exported codec (checkpoint.py);
the audio comes from audio_pool.py, the held-out STOI from held_out.py.
Output folder:
    OUT/ckpt/        model.safetensors (full fp32 state), trainer.pt (optimizer + RNG), state.json
    OUT/export/      the codec checkpoint directory (fp16) that `load_codec(OUT/export)` opens
    OUT/best/        the export (+ training.json) with the best held-out STOI so far
    OUT/metrics.jsonl one JSON object per log / eval line

Shape letters: B batch, T samples.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from codec.training.audio_pool import AudioPool, parse_source
from codec.training.augment import AugmentConfig, augment, change_speed
from codec.training.checkpoint import (
    check_same_config,
    exported_config,
    init_from_export,
    load_checkpoint,
    save_checkpoint,
    save_if_best,
)
from codec.training.frame_labels import FrameLabelPool, PhoneHead, phone_loss
from codec.training.held_out import evaluate, load_eval_clips, stoi_available
from codec.training.losses import CodecLoss, CodecLossWeights

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: list[str]  # "PATH[:WEIGHT]": a folder (searched recursively) or a .tar raw shard / folder of them
    out: str
    eval_data: list[str] = field(default_factory=list)  # held-out folders / files: STOI + mel loss
    max_steps: int = 20000
    batch_size: int = 64
    segment_seconds: float = 1.0
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 500
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 100
    eval_every: int = 1000
    ckpt_every: int = 1000
    time_limit: float | None = None  # seconds of wall clock for this run; checkpoint + export and stop
    # total seconds of training across resumes: the schedule follows max(step / max_steps, time / budget),
    # so a run on hardware of unknown speed still anneals, and stops when the budget is spent
    time_budget: float | None = None
    eval_max_clips: int = 48
    eval_codebooks: tuple[int, ...] = ()  # also evaluate decoding the first N levels: stoi_qN, eval_mel_qN
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA; CPU runs stay fp32
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: CodecLossWeights = field(default_factory=CodecLossWeights)
    # phonetic first level (frame_labels.py): weight of the level-1 phone head's cross-entropy, the number
    # of phone classes, and the share of each batch's rows cut from the phone-labelled pool
    phone_loss: float = 0.0
    phone_classes: int = 0
    phone_share: float = 0.5
    phone_head_lr_scale: float = 20.0  # the fresh linear head learns at lr x this (a fine-tune's lr is small)


# ---- schedule ----------------------------------------------------------------------------------------
def progress_of(cfg: TrainConfig, step: int, train_seconds: float) -> float:
    """Fraction of training done: by steps, or by the time budget when that comes first."""
    progress = step / max(1, cfg.max_steps)
    if cfg.time_budget:
        progress = max(progress, train_seconds / cfg.time_budget)
    return min(1.0, progress)


def lr_at(cfg: TrainConfig, step: int, progress: float, rewarm_from: int = 0) -> float:
    """Linear warm-up, then cosine from lr to lr * min_lr_ratio as `progress` goes 0 -> 1."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if rewarm_from:
        warm = min(warm, (step - rewarm_from + 1) / max(1, cfg.warmup_steps // 2))
    cosine = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm * cosine


# ---- the loop ----------------------------------------------------------------------------------------
def start_run(out_dir: str | Path, device_name: str, seed: int
              ) -> tuple[Path, torch.device, torch.Generator]:
    """A codec run's output folder (made), device and seeded generator (python and torch seeded too)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(device_name)
    random.seed(seed)
    torch.manual_seed(seed)
    return out, device, torch.Generator(device=device).manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig, codec_config: RVQCodecConfig, resume: str | None = None,
          init_from: str | None = None, label_pool: FrameLabelPool | None = None) -> dict:
    """Train (or resume) and export. Returns the last metrics.

    `init_from`: an exported codec directory whose weights (encoder, codebooks with their EMA state, decoder)
    start the run, with a fresh optimizer at step 0; its config must equal `codec_config`. A checkpoint found
    by `resume` wins over it (so one command line both starts and resumes such a run).
    `label_pool`: phone-labelled audio, needed when `cfg.phone_loss` > 0.
    """
    if cfg.phone_loss > 0 and (label_pool is None or cfg.phone_classes < 2 or not 0 < cfg.phone_share <= 1):
        raise ValueError("phone_loss > 0 needs a label pool, phone_classes >= 2 and 0 < phone_share <= 1")
    t_start = time.time()
    out, device, gen = start_run(cfg.out, cfg.device, cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ckpt_dir = out / "ckpt"
    resume_dir = Path(resume) if resume not in (None, "", "auto") else ckpt_dir
    state = {"step": 0, "rewarm_from": 0}
    resuming = resume is not None and (resume_dir / "state.json").is_file()
    if resuming:
        saved = json.loads((resume_dir / "state.json").read_text())
        codec_config = RVQCodecConfig.from_dict(saved["codec_config"])  # the checkpoint's architecture wins
    elif resume not in (None, "auto"):
        raise FileNotFoundError(f"--resume {resume_dir}: no checkpoint there (state.json missing)")
    elif init_from:
        check_same_config(codec_config, exported_config(init_from), init_from)
    model = RVQCodec(codec_config).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params, "lr_scale": 1.0}]
    heads: dict[str, torch.nn.Module] = {}
    if cfg.phone_loss > 0:
        heads["phone_head"] = PhoneHead(codec_config.dimension, cfg.phone_classes).to(device).train()
        groups.append({"params": list(heads["phone_head"].parameters()), "lr_scale": cfg.phone_head_lr_scale})
        params = params + groups[-1]["params"]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if resuming:
        # a checkpoint without Python's RNG state (an older one): at least not the first run's draws again;
        # load_checkpoint replaces this seeding with the saved state when there is one
        random.seed(cfg.seed + saved["step"])
        state = load_checkpoint(resume_dir, model, optimizer, gen, heads)
        log.info("resumed from %s at step %d", resume_dir, state["step"])
    elif init_from:
        init_from_export(model, init_from)
        state["init_from"] = str(init_from)
    loss_fn = CodecLoss(codec_config.sample_rate, cfg.loss).to(device)
    log.info("RVQCodec: %.2fM parameters, %d Hz, %.1f frames/s, %d x %d codebooks, device %s",
             sum(p.numel() for p in params) / 1e6, codec_config.sample_rate, codec_config.frame_rate,
             codec_config.num_codebooks, codec_config.codebook_size, device)

    pool = AudioPool([parse_source(s) for s in cfg.data], codec_config.sample_rate, device)
    eval_clips = load_eval_clips(cfg.eval_data, codec_config.sample_rate, cfg.eval_max_clips)
    if eval_clips and not stoi_available():
        log.warning("pystoi is not installed: evaluation reports the mel loss only")
    metrics_path = out / "metrics.jsonl"
    hop = codec_config.hop_length
    seg = max(hop, int(round(cfg.segment_seconds * codec_config.sample_rate / hop)) * hop)
    use_bf16 = cfg.bf16 and device.type == "cuda"
    step = state["step"]
    train_seconds = float(state.get("train_seconds", 0.0))
    last: dict = {}

    def run_state() -> dict:
        return {"step": step, "train_seconds": round(train_seconds, 1),
                "rewarm_from": state.get("rewarm_from", 0), "init_from": state.get("init_from"),
                "codec_config": codec_config.to_dict(),
                "train_config": _jsonable(asdict(cfg))}

    def checkpoint_and_export() -> None:
        save_checkpoint(ckpt_dir, model, optimizer, run_state(), gen, heads)
        model.save_pretrained(out / "export")
        (out / "export" / "training.json").write_text(json.dumps({**run_state(), **last}, indent=2) + "\n")

    def run_eval() -> None:
        if not eval_clips:
            return
        t0 = time.time()
        result = evaluate(model, eval_clips, loss_fn.mel)
        for q in cfg.eval_codebooks:
            part = evaluate(model, eval_clips, loss_fn.mel, num_codebooks=q)
            result |= {f"{k}_q{q}": v for k, v in part.items()}
        last.update(result)
        _append_jsonl(metrics_path, {"step": step, "elapsed_s": round(time.time() - t_start, 1), **result})
        log.info("eval step %d: %s (%.1fs)", step, " ".join(f"{k} {v:.4f}" for k, v in result.items()),
                 time.time() - t0)
        save_if_best(out, model, result, "stoi", run_state())  # OUT/best: the export with the best STOI

    if step == 0 and state.get("init_from"):
        run_eval()  # the starting point of the curve
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train codec", unit="step", disable=None)
    window_t, window_steps, bad_steps = time.time(), 0, 0
    sums: dict[str, torch.Tensor] = {}
    t_step = time.time()
    while step < cfg.max_steps and progress_of(cfg, step, train_seconds) < 1.0:
        lr = lr_at(cfg, step, progress_of(cfg, step, train_seconds), state.get("rewarm_from", 0))
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        aug = cfg.augment
        factor = 1.0
        if aug.speed_prob > 0 and random.random() < aug.speed_prob:
            factor = random.choice(aug.speeds)
        labelled = max(1, round(cfg.batch_size * cfg.phone_share)) if heads else 0
        rows = []
        if cfg.batch_size > labelled:
            rows.append(change_speed(pool.sample(cfg.batch_size - labelled, int(math.ceil(seg * factor)) + 64,
                                                 gen), factor, seg))
        if labelled:  # the labelled rows go last; the speed change scales their labels with them
            label_wav, labels = label_pool.sample(labelled, seg // hop, gen, factor)
            rows.append(change_speed(label_wav, factor, seg))
        wav = torch.cat(rows)
        wav = augment(wav, codec_config.sample_rate, aug, gen)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            result = model(wav)
            loss, parts = loss_fn(result.wav, wav, result.commit_loss)
            if labelled:
                logits = heads["phone_head"](model.quantizer.codebooks[0], result.latents[-labelled:],
                                             result.codes[-labelled:, 0])
                ph_loss, ph_acc = phone_loss(logits.float(), labels)
                loss = loss + cfg.phone_loss * ph_loss
                parts |= {"phone": ph_loss.detach(), "phone_acc": ph_acc}
        if not torch.isfinite(loss):
            bad_steps += 1
            log.warning("step %d: non-finite loss %s, batch skipped (%d in a row)", step, loss.item(),
                        bad_steps)
            optimizer.zero_grad(set_to_none=True)
            if bad_steps >= 20:
                raise RuntimeError("20 non-finite losses in a row: stopping (lower --lr?)")
            continue
        bad_steps = 0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        step += 1
        now = time.time()
        train_seconds += now - t_step  # evaluation and checkpoint time is excluded: reset below
        t_step = now
        window_steps += 1
        bar.update(1)
        for k, v in {"loss": loss.detach(), "grad_norm": grad_norm, **parts}.items():
            sums[k] = sums.get(k, 0) + v.float()
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            dt = time.time() - window_t
            avg = {k: float(v) / window_steps for k, v in sums.items()}
            rate = window_steps / max(dt, 1e-9)
            rec = {"step": step, "lr": lr, "train_s": round(train_seconds, 1), "steps_per_s": round(rate, 2),
                   "audio_s_per_s": round(rate * cfg.batch_size * seg / codec_config.sample_rate, 1),
                   "elapsed_s": round(time.time() - t_start, 1), **{k: round(v, 5) for k, v in avg.items()}}
            _append_jsonl(metrics_path, rec)
            phone = f" phone {avg['phone']:.3f} acc {avg['phone_acc']:.3f}" if "phone" in avg else ""
            phone += f" neg_stoi {avg['neg_stoi']:.4f}" if "neg_stoi" in avg else ""
            log.info("step %d | loss %.4f mel %.4f wave %.4f commit %.4f%s | gn %.2f | lr %.2e | %.1f it/s",
                     step, avg["loss"], avg["mel"], avg["wave_l1"], avg["commit"], phone, avg["grad_norm"],
                     lr, rate)
            window_t, window_steps, sums = time.time(), 0, {}
        out_of_time = cfg.time_limit is not None and time.time() - t_start >= cfg.time_limit
        done = step >= cfg.max_steps or progress_of(cfg, step, train_seconds) >= 1.0
        if step % cfg.eval_every == 0 or done or out_of_time:
            run_eval()
        if step % cfg.ckpt_every == 0 or done or out_of_time:
            checkpoint_and_export()
        t_step = time.time()
        if out_of_time:
            log.info("time limit %.0fs reached at step %d: checkpoint written, stopping", cfg.time_limit,
                     step)
            break
    bar.close()
    if not (out / "export" / "model.safetensors").is_file():
        checkpoint_and_export()
    return {"step": step, "train_seconds": round(train_seconds, 1), **last}


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, tuple | list):
        return [_jsonable(v) for v in d]
    return d
