#!/usr/bin/env python
"""Fine-tune only the decoder of an RVQ codec with a multi-resolution STFT discriminator (GAN + mel).

    python scripts/finetune_codec_decoder.py --codec models/codec_rvq16k \\
        --data data/codec_corpus/synth/espeak:0.45 --data data/codec_corpus/synth/flite:0.35 \\
        --data data/codec_corpus/real:0.2 --eval-data tests/data/speech/cmu-arctic-sample \\
        --out runs/codec_decoder_gan --max-steps 6000 --dnsmos
    python scripts/finetune_codec_decoder.py ... --resume      # go on from OUT/ckpt

The encoder and codebooks are frozen, so every token corpus made with --codec stays valid for the result
in OUT/export. --dnsmos adds DNSMOS overall (no reference needed) of the decoded held-out clips to each
evaluation, next to STOI: the pair shows whether naturalness rises without costing intelligibility.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from codec.training.decoder_finetune import DecoderFinetuneConfig, finetune_decoder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", required=True, help="RVQ codec checkpoint directory to start from")
    p.add_argument("--data", action="append", required=True, help="PATH[:WEIGHT], repeatable")
    p.add_argument("--eval-data", action="append", default=[], help="held-out audio folder/file, repeatable")
    p.add_argument("--out", required=True, help="run folder (ckpt/, export/, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="go on from OUT/ckpt when present")
    p.add_argument("--max-steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--segment-seconds", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decay to lr * this at --max-steps")
    p.add_argument("--disc-lr", type=float, default=1e-4)
    p.add_argument("--disc-warmup-steps", type=int, default=200)
    p.add_argument("--codebooks", type=int, nargs="+", default=[4, 8],
                   help="numbers of levels the decoder is trained (and evaluated) with")
    p.add_argument("--mel-weight", type=float, default=15.0)
    p.add_argument("--stoi-weight", type=float, default=0.0,
                   help="weight of 1 - differentiable STOI (needs torch_stoi; 0 = off)")
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--fm-weight", type=float, default=2.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--time-limit", type=float, default=None, help="wall-clock seconds; checkpoint and stop")
    p.add_argument("--dnsmos", action="store_true", help="score DNSMOS overall at each evaluation")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = DecoderFinetuneConfig(
        codec=args.codec, data=args.data, out=args.out, eval_data=args.eval_data, max_steps=args.max_steps,
        batch_size=args.batch_size, segment_seconds=args.segment_seconds, lr=args.lr,
        min_lr_ratio=args.min_lr_ratio, disc_lr=args.disc_lr,
        disc_warmup_steps=args.disc_warmup_steps, codebook_choices=tuple(args.codebooks),
        mel_weight=args.mel_weight, stoi_weight=args.stoi_weight, adv_weight=args.adv_weight,
        fm_weight=args.fm_weight,
        log_every=args.log_every, eval_every=args.eval_every, ckpt_every=args.ckpt_every,
        time_limit=args.time_limit, device=args.device, seed=args.seed,
    )
    quality = None
    if args.dnsmos:
        from evaluation.quality import DNSMOS

        dnsmos = DNSMOS()

        def quality(wav, rate):
            return dnsmos(wav, rate)["ovrl"]

    result = finetune_decoder(cfg, resume=args.resume, quality=quality)
    print(json.dumps({"out": str(Path(args.out) / "export"), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
