"""Fine-tune only the decoder of a trained `RVQCodec` against a multi-resolution STFT discriminator.

Why only the decoder: an LM corpus tokenized with the codec stays valid only while the encoder and the
codebooks stay bit-identical. Everything that makes the audio sound better (less buzz, sharper harmonics)
lives in the decoder, so it is the one part that may change after the LM has been trained.

Each step decodes the codes of a random crop with the first Q levels, Q drawn from `codebook_choices`
(a TTS model predicting 4 of 8 levels, and the full codec, both get a good decoder). The discriminator
trains alone for `disc_warmup_steps` first, so the decoder's first adversarial gradients are informative.

Output folder:
    OUT/ckpt/         codec.safetensors, discriminator.safetensors, trainer.pt (optimizers + RNG), state.json
    OUT/export/       the codec checkpoint directory (stored in the source's dtype), encoder and codebooks
                      bit-identical to the source
    OUT/best/         the export (+ training.json) with the best held-out STOI at the most levels so far
    OUT/metrics.jsonl one JSON object per log / eval line

Shape letters: B batch, T samples, Q codebooks.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from codec.audio import pad_batch
from codec.backends.rvq_codec import RVQCodec
from codec.base import WEIGHTS_FILE, load_codec
from codec.training.audio_pool import AudioPool, parse_source
from codec.training.checkpoint import save_if_best, swap_in
from codec.training.discriminator import (
    MultiResolutionSTFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from codec.training.held_out import load_eval_clips, stoi_available
from codec.training.losses import MultiScaleMelLoss, NegStoiLoss
from codec.training.trainer import start_run

log = logging.getLogger(__name__)

# Scores decoded audio (mono [T], sample rate) -> a number; e.g. DNSMOS overall from the evaluation package.
QualityFn = Callable[[np.ndarray, int], float]


@dataclass
class DecoderFinetuneConfig:
    codec: str  # codec checkpoint directory (an `RVQCodec` export)
    data: list[str]  # "PATH[:WEIGHT]", as in codec.training.trainer
    out: str
    eval_data: list[str] = field(default_factory=list)
    max_steps: int = 4000
    batch_size: int = 8
    segment_seconds: float = 1.0
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: tuple[float, float] = (0.8, 0.99)
    warmup_steps: int = 100  # decoder LR warm-up, counted from the end of the discriminator warm-up
    # then cosine down to lr * min_lr_ratio at max_steps: at a constant LR the evaluation curve wobbles from
    # one checkpoint to the next; the decay makes the last checkpoint the one to take
    min_lr_ratio: float = 0.1
    disc_warmup_steps: int = 200
    codebook_choices: tuple[int, ...] = (4, 8)
    mel_weight: float = 15.0
    wave_weight: float = 1.5
    stoi_weight: float = 0.0  # weight of 1 - differentiable STOI (losses.NegStoiLoss); 0 = off
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    disc_channels: int = 8
    disc_n_ffts: tuple[int, ...] = (1024, 512, 256)
    grad_clip: float = 10.0
    log_every: int = 50
    eval_every: int = 500
    ckpt_every: int = 250
    eval_max_clips: int = 16
    time_limit: float | None = None  # wall-clock seconds for this run; checkpoint + export and stop
    seed: int = 0
    device: str = "auto"


def freeze_all_but_decoder(codec: RVQCodec) -> list[torch.nn.Parameter]:
    """Freeze encoder and quantizer; return the decoder's parameters."""
    codec.requires_grad_(False)
    codec.decoder.requires_grad_(True)
    return list(codec.decoder.parameters())


def frozen_state(codec: RVQCodec) -> dict[str, torch.Tensor]:
    """Every tensor that decides the codes (all but the decoder), for checking that nothing moved."""
    return {k: v.detach().clone() for k, v in codec.state_dict().items() if not k.startswith("decoder.")}


@torch.no_grad()
def decode_with_levels(codec: RVQCodec, wav: torch.Tensor, num_codebooks: int) -> torch.Tensor:
    """The frozen half: wav [B, 1, T] -> summed code vectors of the first `num_codebooks` levels [B, D, F]."""
    codes = codec.encode(wav).codes
    return codec.quantized_from_codes(codes[:, :num_codebooks])


@torch.no_grad()
def evaluate_decoder(codec: RVQCodec, clips: list[torch.Tensor], mel_loss: torch.nn.Module,
                     levels: tuple[int, ...], quality: QualityFn | None = None) -> dict[str, float]:
    """Round trip of held-out clips with each number of levels -> stoi_qN, mel_qN (and quality_qN)."""
    was_training = codec.decoder.training
    codec.decoder.eval()
    result: dict[str, float] = {}
    wav, lengths = pad_batch(clips)
    encoded = codec.encode(wav.to(codec.device), lengths)
    for q in levels:
        out = codec.decode(encoded.codes[:, :q], encoded.frame_lengths).float().cpu()
        stois, mels, scores = [], [], []
        for b, clip in enumerate(clips):
            ref, hyp = clip.cpu(), out[b, 0, : clip.numel()]
            mels.append(float(mel_loss(hyp[None, None], ref[None, None])))
            if stoi_available():
                from pystoi import stoi

                stois.append(stoi(ref.double().numpy(), hyp.double().numpy(), codec.sample_rate))
            if quality is not None:
                scores.append(quality(hyp.numpy(), codec.sample_rate))
        result[f"mel_q{q}"] = float(np.mean(mels))
        if stois:
            result[f"stoi_q{q}"] = float(np.mean(stois))
        if scores:
            result[f"quality_q{q}"] = float(np.mean(scores))
    codec.decoder.train(was_training)
    return result


def _save(directory: Path, codec: RVQCodec, disc: torch.nn.Module, optimizers: dict, state: dict,
          gen: torch.Generator) -> None:
    """Write DIR.tmp, then swap it in: a kill mid-write leaves the previous checkpoint intact."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in (("codec", codec), ("discriminator", disc)):
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  str(tmp / f"{name}.safetensors"))
    torch.save({"optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "rng": {"torch": torch.get_rng_state(), "data": gen.get_state().cpu(),
                        "python": list(random.getstate()[1])}}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    swap_in(tmp, directory)


def _load(directory: Path, codec: RVQCodec, disc: torch.nn.Module, optimizers: dict,
          gen: torch.Generator) -> dict:
    codec.load_state_dict(load_file(str(directory / "codec.safetensors")))
    disc.load_state_dict(load_file(str(directory / "discriminator.safetensors")))
    trainer = torch.load(directory / "trainer.pt", map_location="cpu", weights_only=True)
    for k, o in optimizers.items():
        o.load_state_dict(trainer["optimizers"][k])
    torch.set_rng_state(trainer["rng"]["torch"])
    gen.set_state(trainer["rng"]["data"].to(gen.get_state().device))
    random.setstate((3, tuple(trainer["rng"]["python"]), None))
    return json.loads((directory / "state.json").read_text())


_SAFETENSORS_FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def stored_float_dtype(codec_dir: str | Path) -> torch.dtype:
    """The dtype a codec checkpoint stores its float tensors in (float32 for anything else). Exporting in
    the same dtype keeps the frozen encoder and codebooks bit-identical on disk, not only in memory."""
    from safetensors import safe_open

    weights = Path(codec_dir) / WEIGHTS_FILE
    if not weights.is_file():
        return torch.float32
    with safe_open(str(weights), framework="pt") as f:
        for name in f.keys():
            tensor = f.get_slice(name)
            dtype = _SAFETENSORS_FLOATS.get(tensor.get_dtype())
            if dtype is not None:
                return dtype
    return torch.float32


def uses_discriminator(cfg: DecoderFinetuneConfig) -> bool:
    """With both GAN weights at 0 this is a plain spectral (mel + waveform) fine-tune: no discriminator."""
    return cfg.adv_weight > 0 or cfg.fm_weight > 0


def _decoder_lr(cfg: DecoderFinetuneConfig, step: int) -> float:
    warmup_end = cfg.disc_warmup_steps if uses_discriminator(cfg) else 0
    if step < warmup_end:
        return 0.0
    warm = min(1.0, (step - warmup_end + 1) / max(1, cfg.warmup_steps))
    progress = (step - warmup_end) / max(1, cfg.max_steps - warmup_end)
    cosine = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * warm * cosine


def _discriminator_step(disc: torch.nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                        fake: torch.Tensor, grad_clip: float) -> tuple[list, float]:
    """One hinge update of the discriminator -> (real-audio feature maps, loss)."""
    real_logits, real_features = disc(real)
    fake_logits, _ = disc(fake.detach())
    loss = discriminator_loss(real_logits, fake_logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(disc.parameters(), grad_clip)
    optimizer.step()
    return real_features, loss.item()


def finetune_decoder(cfg: DecoderFinetuneConfig, resume: bool = False,
                     quality: QualityFn | None = None) -> dict:
    """Train (or resume) and export to OUT/export. Returns the last metrics."""
    t_start = time.time()
    out, device, gen = start_run(cfg.out, cfg.device, cfg.seed)
    codec = load_codec(cfg.codec, device=device)
    export_dtype = stored_float_dtype(cfg.codec)
    if not isinstance(codec, RVQCodec):
        raise TypeError(f"{cfg.codec} is a {type(codec).__name__}; decoder fine-tuning needs an RVQCodec")
    if max(cfg.codebook_choices) > codec.num_codebooks or min(cfg.codebook_choices) < 1:
        raise ValueError(f"codebook_choices {cfg.codebook_choices} outside 1..{codec.num_codebooks}")
    codec.eval()  # encoder / quantizer stay in eval mode: no EMA codebook updates, no quantizer dropout
    params = freeze_all_but_decoder(codec)
    codec.decoder.train()
    reference = frozen_state(codec)
    disc = MultiResolutionSTFTDiscriminator(cfg.disc_n_ffts, cfg.disc_channels).to(device)
    optimizers = {"decoder": torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas),
                  "discriminator": torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas)}
    ckpt_dir = out / "ckpt"
    state = {"step": 0}
    if resume and (ckpt_dir / "state.json").is_file():
        state = _load(ckpt_dir, codec, disc, optimizers, gen)
        log.info("resumed from %s at step %d", ckpt_dir, state["step"])
        for k, v in frozen_state(codec).items():
            if not torch.equal(v, reference[k]):
                raise RuntimeError(f"{ckpt_dir}: frozen tensor {k} differs from {cfg.codec}; this checkpoint "
                                   "was fine-tuned from another codec")
    mel_loss = MultiScaleMelLoss(codec.sample_rate).to(device)
    stoi_loss = NegStoiLoss(codec.sample_rate).to(device) if cfg.stoi_weight > 0 else None
    pool = AudioPool([parse_source(s) for s in cfg.data], codec.sample_rate, device)
    eval_clips = load_eval_clips(cfg.eval_data, codec.sample_rate, cfg.eval_max_clips)
    levels = tuple(sorted(set(cfg.codebook_choices)))
    hop = codec.hop_length
    seg = max(hop, round(cfg.segment_seconds * codec.sample_rate / hop) * hop)
    metrics_path = out / "metrics.jsonl"
    log.info("decoder fine-tune of %s: decoder %.2fM params (trained), discriminator %.2fM, levels %s, "
             "D warm-up %d steps", cfg.codec, sum(p.numel() for p in params) / 1e6,
             sum(p.numel() for p in disc.parameters()) / 1e6, levels, cfg.disc_warmup_steps)
    step = int(state["step"])
    last: dict = {}

    def record(rec: dict) -> None:
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def run_eval() -> None:
        if eval_clips:
            last.update(evaluate_decoder(codec, eval_clips, mel_loss, levels, quality))
            record({"step": step, "elapsed_s": round(time.time() - t_start, 1), **last})
            log.info("eval step %d: %s", step, " ".join(f"{k} {v:.4f}" for k, v in last.items()))
            best_by = f"stoi_q{max(levels)}"  # OUT/best: the export with the best STOI at the most levels
            save_if_best(out, codec, {"step": step, **last}, best_by, {"codec": cfg.codec}, export_dtype)

    def checkpoint_and_export() -> None:
        run_state = {"step": step, "codec": cfg.codec, "config": asdict(cfg)}  # json writes tuples as lists
        _save(ckpt_dir, codec, disc, optimizers, run_state, gen)
        codec.save_pretrained(out / "export", dtype=export_dtype)
        (out / "export" / "training.json").write_text(json.dumps({**run_state, **last}, indent=2) + "\n")

    if step == 0:
        run_eval()  # the starting point of the curve
    bar = tqdm(total=cfg.max_steps, initial=step, desc="fine-tune decoder", unit="step", disable=None)
    sums: dict[str, float] = {}
    window_t, window_steps = time.time(), 0
    while step < cfg.max_steps:
        lr = _decoder_lr(cfg, step)
        for group in optimizers["decoder"].param_groups:
            group["lr"] = lr
        wav = pool.sample(cfg.batch_size, seg, gen)
        levels_now = random.choice(cfg.codebook_choices)
        quantized = decode_with_levels(codec, wav, levels_now)
        train_decoder = lr > 0
        with torch.set_grad_enabled(train_decoder):
            fake = codec.decoder(quantized)[..., : wav.shape[-1]]
        parts: dict[str, torch.Tensor | float] = {}
        if uses_discriminator(cfg):
            # its real-audio features (pre-update, detached) serve feature matching below
            real_features, parts["d_loss"] = _discriminator_step(disc, optimizers["discriminator"], wav, fake,
                                                                 cfg.grad_clip)
        if train_decoder:
            parts |= {"mel": mel_loss(fake, wav), "wave_l1": torch.nn.functional.l1_loss(fake, wav)}
            g_loss = cfg.mel_weight * parts["mel"] + cfg.wave_weight * parts["wave_l1"]
            if stoi_loss is not None:
                parts["neg_stoi"] = stoi_loss(fake, wav)
                g_loss = g_loss + cfg.stoi_weight * parts["neg_stoi"]
            if uses_discriminator(cfg):
                fake_logits, fake_features = disc(fake)
                parts |= {"adv": generator_adversarial_loss(fake_logits),
                          "fm": feature_matching_loss(real_features, fake_features)}
                g_loss = g_loss + cfg.adv_weight * parts["adv"] + cfg.fm_weight * parts["fm"]
            optimizers["decoder"].zero_grad(set_to_none=True)
            g_loss.backward()
            parts["g_grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizers["decoder"].step()
            disc.zero_grad(set_to_none=True)  # the generator pass left gradients on the discriminator
        step += 1
        bar.update(1)
        window_steps += 1
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + (v.item() if torch.is_tensor(v) else v)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            rate = window_steps / max(time.time() - window_t, 1e-9)
            rec = {"step": step, "lr": lr, "steps_per_s": round(rate, 3),
                   **{k: round(v / window_steps, 5) for k, v in sums.items()}}
            record(rec)
            shown = " ".join(f"{k} {v:.4f}" for k, v in rec.items() if k not in ("step", "lr", "steps_per_s"))
            log.info("step %d | lr %.1e | %s | %.2f it/s", step, lr, shown, rate)
            sums, window_t, window_steps = {}, time.time(), 0
        out_of_time = cfg.time_limit is not None and time.time() - t_start >= cfg.time_limit
        if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
            run_eval()
        if step % cfg.ckpt_every == 0 or step == cfg.max_steps or out_of_time:
            checkpoint_and_export()
        if out_of_time:
            log.info("time limit %.0fs reached at step %d: checkpoint written, stopping", cfg.time_limit,
                     step)
            break
    bar.close()
    for k, v in frozen_state(codec).items():  # the contract of this module; cheap to check every run
        if not torch.equal(v, reference[k]):
            raise RuntimeError(f"frozen tensor {k} changed during decoder fine-tuning")
    if not (out / "export" / "config.json").is_file():
        checkpoint_and_export()
    return {"step": step, **last}

