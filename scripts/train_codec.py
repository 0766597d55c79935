#!/usr/bin/env python
"""Train our own RVQ codec (`codec.backends.rvq_codec.RVQCodec`) and export it as a codec checkpoint
directory.

    python scripts/build_codec_corpus.py --out data/codec_corpus
    python scripts/train_codec.py --data data/codec_corpus/synth:0.8 --data data/codec_corpus/real:0.2 \\
        --eval-data tests/data/speech --out runs/codec_rvq16k --max-steps 20000 --time-limit 540
    python scripts/train_codec.py ... --resume            # go on from OUT/ckpt (or --resume PATH)
    python scripts/train_codec.py ... --init-from models/codec_rvq16k --resume   # fine-tune an export

`--data PATH[:WEIGHT]` (repeatable): a folder of audio (recursive), a raw shard .tar or a folder of them;
sources are drawn in proportion to WEIGHT. `--phone-data FOLDER` (repeatable) with `--phone-loss W`: clips
with `.align.json` sidecars (the corpus builder's exact timings, or `scripts/align.py`) train a phone head on
codebook 1 (codec/training/frame_labels.py), so that level carries the phone rather than the voice.
The codec lands in OUT/export (`load_codec(OUT/export)`), checkpoints in OUT/ckpt, metrics (losses, STOI
on --eval-data) in OUT/metrics.jsonl. bf16 autocast on GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import torch

from codec.audio import AudioReadError, load_audio, resample, to_mono
from codec.backends.rvq_codec import RVQCodecConfig
from codec.training.checkpoint import exported_config
from codec.training.frame_labels import FrameLabelPool
from codec.training.losses import CodecLossWeights
from codec.training.trainer import TrainConfig, pick_device, train
from data_pipeline.alignment.phones import PHONES
from data_pipeline.alignment.schema import Alignment

log = logging.getLogger("train_codec")


def phone_labelled_pool(folders: list[str], codec_config: RVQCodecConfig, device: str,
                        max_clips: int | None) -> FrameLabelPool:
    """Every clip with an `.align.json` sidecar under `folders` -> a FrameLabelPool of frame phone ids.
    Unreadable clips or sidecars are logged with their path and skipped."""
    hop, sr = codec_config.hop_length, codec_config.sample_rate
    clips, bad = [], 0
    sidecars = sorted(p for folder in folders for p in Path(folder).rglob("*.align.json"))
    if max_clips:
        sidecars = sidecars[:: max(1, len(sidecars) // max_clips)][:max_clips]
    for sidecar in sidecars:
        stem = sidecar.name[: -len(".align.json")]
        audio = [p for p in sidecar.parent.glob(stem + ".*") if p.suffix in (".flac", ".wav")]
        try:
            if not audio:
                raise AudioReadError(str(sidecar), "no .flac or .wav beside it")
            wav, rate = load_audio(audio[0], name=str(audio[0]))
            wav = resample(to_mono(wav), rate, sr)[0]
            num_frames = -(-wav.numel() // hop)
            labels = Alignment.from_json(json.loads(sidecar.read_text())).frame_phone_ids(num_frames)
        except (AudioReadError, ValueError, KeyError) as e:
            log.warning("phone data: skipped %s: %s", sidecar, e)
            bad += 1
            continue
        clips.append((wav, torch.from_numpy(labels)))
    if not clips:
        raise SystemExit(f"--phone-data {folders}: no readable clip with an .align.json sidecar ({bad} bad)")
    log.info("phone data: %d clips, %.1f min, %d skipped", len(clips),
             sum(w.numel() for w, _ in clips) / sr / 60, bad)
    return FrameLabelPool(clips, hop, pick_device(device))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, help="PATH[:WEIGHT], repeatable")
    p.add_argument("--eval-data", action="append", default=[], help="held-out audio folder/file, repeatable")
    p.add_argument("--out", required=True, help="run folder (ckpt/, export/, metrics.jsonl)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="resume from OUT/ckpt when present (or from the given checkpoint folder)")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start from an exported codec's weights (fresh optimizer, step 0); its config must "
                        "equal --codec-config (default: the export's config). A checkpoint in OUT/ckpt found "
                        "by --resume wins over it")
    p.add_argument("--eval-codebooks", type=int, nargs="*", default=[],
                   help="also evaluate decoding only the first N levels (stoi_qN), e.g. 4")
    p.add_argument("--max-steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--segment-seconds", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--time-limit", type=float, default=None,
                   help="wall-clock seconds for this run; checkpoint, export and stop")
    p.add_argument("--time-budget", type=float, default=None,
                   help="training seconds across resumes: the LR anneals over it, then training stops")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-bf16", action="store_true", help="fp32 on GPU too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codec-config", type=Path, default=None,
                   help="JSON with RVQCodecConfig fields (defaults: 16 kHz, 50 Hz, 8 x 1024)")
    p.add_argument("--num-codebooks", type=int, default=None)
    p.add_argument("--codebook-size", type=int, default=None)
    p.add_argument("--phone-data", action="append", default=[], metavar="FOLDER",
                   help="clips with .align.json sidecars for the codebook-1 phone head, repeatable")
    p.add_argument("--phone-loss", type=float, default=0.0, help="weight of the phone head's cross-entropy")
    p.add_argument("--phone-share", type=float, default=0.5, help="share of each batch from --phone-data")
    p.add_argument("--phone-max-clips", type=int, default=None, help="at most this many --phone-data clips")
    p.add_argument("--stoi-loss", type=float, default=0.0, metavar="W",
                   help="weight of 1 - differentiable STOI (needs torch_stoi)")
    args = p.parse_args(argv)
    if bool(args.phone_data) != (args.phone_loss > 0):
        p.error("--phone-data and --phone-loss > 0 go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.codec_config:
        codec_config = RVQCodecConfig.from_dict(json.loads(args.codec_config.read_text()))
    elif args.init_from:
        codec_config = exported_config(args.init_from)
    else:
        codec_config = RVQCodecConfig()
    if args.num_codebooks:
        codec_config = dataclasses.replace(codec_config, num_codebooks=args.num_codebooks)
    if args.codebook_size:
        codec_config = dataclasses.replace(codec_config, codebook_size=args.codebook_size)
    cfg = TrainConfig(
        data=args.data, out=args.out, eval_data=args.eval_data, max_steps=args.max_steps,
        batch_size=args.batch_size, segment_seconds=args.segment_seconds, lr=args.lr,
        warmup_steps=args.warmup_steps, log_every=args.log_every, eval_every=args.eval_every,
        ckpt_every=args.ckpt_every, time_limit=args.time_limit, time_budget=args.time_budget,
        seed=args.seed, device=args.device, eval_codebooks=tuple(args.eval_codebooks),
        bf16=not args.no_bf16, phone_loss=args.phone_loss, phone_share=args.phone_share,
        phone_classes=len(PHONES) if args.phone_loss > 0 else 0,
        loss=CodecLossWeights(stoi=args.stoi_loss),
    )
    label_pool = (phone_labelled_pool(args.phone_data, codec_config, args.device, args.phone_max_clips)
                  if args.phone_data else None)
    result = train(cfg, codec_config, resume=args.resume, init_from=args.init_from, label_pool=label_pool)
    print(json.dumps({"out": str(Path(args.out) / "export"), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
