#!/usr/bin/env python
"""Benchmark codec encoding: batched padded encode vs a per-file loop, and chunked long-audio memory.

Examples:
  python scripts/bench_codec.py                                    # encodec_24khz:random on CPU
  python scripts/bench_codec.py --device cuda --clips 256 --batch-size 32
  python scripts/bench_codec.py --spec encodec_24khz@6 --long-seconds 600 --device cuda

Throughput table: the baseline is one `encode` call per clip (what a naive tokenizer does); the candidate
sorts clips by length and encodes `--batch-size` of them per forward. Both run in the same process on the
same clips (real speech from --audio-dir, cycled), and the codes of the two are compared.
Memory table: one long synthetic clip encoded at once vs with `encode_long`; each variant runs in its own
child process and reports its peak memory (CUDA: max allocated; CPU: peak resident set).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from codec import load_audio, load_codec, pad_batch, resample
from codec.base import Codec

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="encodec_24khz:random", help="load_codec spec (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--audio-dir", type=Path, default=ROOT / "tests/data/speech",
                   help="folder searched recursively for .wav/.flac clips (default: the test clips)")
    p.add_argument("--clips", type=int, default=32, help="clips to encode (cycled from --audio-dir)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="timed repeats; the best one is reported")
    p.add_argument("--long-seconds", type=float, default=120.0, help="0 skips the memory table")
    p.add_argument("--chunk-seconds", type=float, default=10.0)
    p.add_argument("--overlap-seconds", type=float, default=1.0)
    p.add_argument("--long-child", choices=["whole", "chunked"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


def load_clips(audio_dir: Path, count: int, sample_rate: int) -> list[torch.Tensor]:
    """`count` mono clips at the codec rate, cycling over the files found (sorted, so runs repeat)."""
    files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in {".wav", ".flac"})
    if not files:
        raise SystemExit(f"no .wav/.flac files under {audio_dir}")
    cache: dict[Path, torch.Tensor] = {}
    clips = []
    for i in range(count):
        path = files[i % len(files)]
        if path not in cache:
            wav, sr = load_audio(path)
            cache[path] = resample(wav.mean(0, keepdim=True), sr, sample_rate)
        clips.append(cache[path])
    return clips


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_best(fn, repeats: int, device: str) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def per_file(codec: Codec, clips: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    return [codec.encode(c[None].to(device)).codes[0].cpu() for c in clips]


def batched(codec: Codec, clips: list[torch.Tensor], batch_size: int, device: str) -> list[torch.Tensor]:
    order = sorted(range(len(clips)), key=lambda i: clips[i].shape[-1])  # similar lengths pad little
    out: list[torch.Tensor] = [torch.empty(0)] * len(clips)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        wav, lengths = pad_batch([clips[j] for j in idx])
        enc = codec.encode(wav.to(device), lengths.to(device))
        for b, j in enumerate(idx):
            out[j] = enc.codes[b, :, : int(enc.frame_lengths[b])].cpu()
    return out


def throughput_table(args: argparse.Namespace, codec: Codec) -> None:
    clips = load_clips(args.audio_dir, args.clips, codec.sample_rate)
    seconds = sum(c.shape[-1] for c in clips) / codec.sample_rate
    per_file(codec, clips[:2], args.device)  # warm-up (allocator, cuDNN autotune, lazy init)
    t_loop, loop_codes = time_best(lambda: per_file(codec, clips, args.device), args.repeats, args.device)
    t_batch, batch_codes = time_best(lambda: batched(codec, clips, args.batch_size, args.device),
                                     args.repeats, args.device)
    frames = sum(c.shape[-1] for c in loop_codes)
    same = sum(int((a == b).all(0).sum()) for a, b in zip(loop_codes, batch_codes, strict=True))
    print(f"\nencode throughput: {args.spec} on {args.device}, {len(clips)} clips, {seconds:.1f} s of audio, "
          f"threads={torch.get_num_threads()}")
    print(f"{'method':<28}{'wall s':>9}{'audio s / s':>13}{'speed-up':>10}")
    print(f"{'per-file loop (baseline)':<28}{t_loop:>9.3f}{seconds / t_loop:>13.1f}{1.0:>10.2f}")
    print(f"{f'batched, batch={args.batch_size}':<28}{t_batch:>9.3f}{seconds / t_batch:>13.1f}"
          f"{t_loop / t_batch:>10.2f}")
    print(f"frames with identical codes (batched vs per-file): {same}/{frames} = {same / frames:.4f}")


class PeakRSS:
    """Samples this process's resident set (Linux /proc) every few ms; `peak_mb` is the most seen."""

    def __init__(self) -> None:
        self.page = resource.getpagesize()
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakRSS:
        self.start = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    @property
    def added_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def long_child(args: argparse.Namespace) -> None:
    """Runs in a child process: encode one long clip, print JSON with time and peak memory."""
    codec = load_codec(args.spec, device=args.device)
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(1, int(args.long_seconds * codec.sample_rate), generator=g)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    wav = wav.to(args.device)
    start = time.perf_counter()
    with PeakRSS() as rss:
        if args.long_child == "whole":
            codes = codec.encode(wav[None]).codes[0]
        else:
            codes = codec.encode_long(wav, chunk_seconds=args.chunk_seconds,
                                      overlap_seconds=args.overlap_seconds)
        sync(args.device)
    elapsed = time.perf_counter() - start
    if args.device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # what the encode added on top of the model and the input
        peak_mb = rss.added_mb
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "frames": codes.shape[-1]}))


def memory_table(args: argparse.Namespace) -> None:
    rows = {}
    for variant in ("whole", "chunked"):
        cmd = [sys.executable, __file__, "--long-child", variant, "--spec", args.spec,
               "--device", args.device, "--long-seconds", str(args.long_seconds),
               "--chunk-seconds", str(args.chunk_seconds), "--overlap-seconds", str(args.overlap_seconds)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rows[variant] = None
            print(f"{variant}: failed ({proc.stderr.strip().splitlines()[-1:]})")
            continue
        rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    what = "GPU max allocated" if args.device.startswith("cuda") else "added peak RSS"
    print(f"\nlong audio: {args.long_seconds:.0f} s clip, chunks of {args.chunk_seconds} s with "
          f"{args.overlap_seconds} s overlap ({what})")
    print(f"{'method':<26}{'wall s':>9}{'peak MiB':>11}{'memory ratio':>14}{'frames':>9}")
    base = rows.get("whole")
    for variant, label in (("whole", "one forward (baseline)"), ("chunked", "encode_long")):
        r = rows.get(variant)
        if r is None:
            print(f"{label:<26}{'failed':>9}")
            continue
        ratio = r["peak_mb"] / base["peak_mb"] if base and base["peak_mb"] > 0 else float("nan")
        print(f"{label:<26}{r['seconds']:>9.2f}{r['peak_mb']:>11.1f}{ratio:>14.3f}{r['frames']:>9}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.long_child:
        long_child(args)
        return
    codec = load_codec(args.spec, device=args.device)
    throughput_table(args, codec)
    if args.long_seconds > 0:
        memory_table(args)


if __name__ == "__main__":
    main()
