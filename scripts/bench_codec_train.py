#!/usr/bin/env python
"""Codec training-step cost: the "spectral" RVQCodec against the SEANet baseline, measured in the same run.

    python scripts/bench_codec_train.py --batch-size 8 --steps 3 --threads 1

Reports wall and CPU seconds per step (forward + losses + backward + AdamW) and audio seconds trained per
wall second, with ratios against the SEANet row. CPU seconds are the steadier number on a busy machine.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from codec.training.losses import CodecLoss


def time_steps(config: RVQCodecConfig, batch: int, seconds: float, steps: int,
               device: str) -> tuple[float, float]:
    torch.manual_seed(0)
    model = RVQCodec(config).to(device).train()
    loss_fn = CodecLoss(config.sample_rate).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    num_t = int(seconds * config.sample_rate) // config.hop_length * config.hop_length
    wav = (torch.randn(batch, 1, num_t, generator=torch.Generator().manual_seed(0)) * 0.1).to(device)

    def step() -> None:
        out = model(wav)
        loss, _ = loss_fn(out.wav, wav, out.commit_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: k-means init of the codebooks, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--segment-seconds", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, config in (("seanet (baseline)", RVQCodecConfig(architecture="seanet")),
                         ("spectral", RVQCodecConfig(architecture="spectral"))):
        params = sum(p.numel() for p in RVQCodec(config).parameters()) / 1e6
        wall, cpu = time_steps(config, args.batch_size, args.segment_seconds, args.steps, args.device)
        rows.append((name, params, wall, cpu, args.batch_size * args.segment_seconds / wall))
    base_cpu = rows[0][3]
    print(f"batch {args.batch_size} x {args.segment_seconds}s, {args.threads} thread(s), {args.device}")
    print(f"{'codec':<18} {'params M':>8} {'wall s/step':>11} {'cpu s/step':>10} {'audio s/s':>9} "
          f"{'speed-up (cpu)':>14}")
    for name, params, wall, cpu, rate in rows:
        print(f"{name:<18} {params:>8.2f} {wall:>11.2f} {cpu:>10.2f} {rate:>9.1f} {base_cpu / cpu:>13.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
