#!/usr/bin/env python
"""Benchmark: tokenize throughput (batched vs one file at a time) and loader padding (buckets vs none).

  python scripts/bench_tokenize.py                       # CPU: our RVQ codec + random 24 kHz EnCodec, 150 s
  python scripts/bench_tokenize.py --device cuda --seconds 600
  python scripts/bench_tokenize.py --threads 1 2        # also compare torch thread counts

Part 1 builds a corpus from the real clips in tests/data/speech (replicated up to --seconds), ingests it
into raw shards, and tokenizes the same shards with each codec (one instance per codec): once with one
codec forward per file (`batch_seconds=0`) and once per --batch-seconds with length-sorted padded batches,
all in the same run; the table prints the ratios. A second table gives each codec's encode cost per audio
second against the batch size on equal-length clips (no padding, no I/O): where it is flat, the codec is
compute-bound at batch 1 and batching cannot pay (it only amortises per-call overhead).
The overhead table answers "how close to the bare codec does tokenizing run": in interleaved rounds it
times the whole tokenize_shards run (read, decode, resample, batch, pad, encode, write) and the bare codec
forwards alone on the same clips in the same padded batches (decoded and padded beforehand, untimed), and
reports the share of the run spent outside those forwards, with where it goes (each part timed alone).
Part 2 runs the loader over token shards of --utterances utterances with LibriTTS-like lengths
(log-normal, median ~5 s) and reports the padding fraction of the batches with length buckets and without.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from codec.audio import pad_batch
from codec.base import load_codec
from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.loading.batching import BatchingConfig, padding_fraction
from data_pipeline.loading.loader import LoaderConfig, TokenLoader
from data_pipeline.records import TokenMeta
from data_pipeline.sharding import expand_shards
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.shard_tokenizer import ShardTokenizer, _Clip, read_raw_shard
from data_pipeline.tokens.token_shards import token_sample, write_shard_atomically, write_tar
from data_pipeline.tokens.tokenize import SUMMARY_DIR, tokenize_shards

SPEECH = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech"


def build_corpus(out: Path, seconds: float) -> float:
    """Copy the real clips (all sets, round robin) into one folder corpus until `seconds` of audio."""
    import soundfile as sf

    rows = []
    for tsv in sorted(SPEECH.glob("*/transcripts.tsv")):
        with open(tsv, newline="") as f:
            rows += [(tsv.parent / r["file"], r["speaker"], r["transcript"])
                     for r in csv.DictReader(f, delimiter="\t")]
    out.mkdir(parents=True)
    total, copy = 0.0, 0
    lines = ["file\tspeaker\ttranscript"]
    while total < seconds:
        for path, speaker, text in rows:
            name = f"c{copy:02d}_{path.name}"
            shutil.copy(path, out / name)
            lines.append(f"{name}\t{speaker}\t{text}")
            total += sf.info(str(path)).duration
            if total >= seconds:
                break
        copy += 1
    (out / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return total


def bench_tokenize(args: argparse.Namespace, work: Path) -> None:
    corpus = work / "corpus"
    audio = build_corpus(corpus, args.seconds)
    summary = ingest(corpus, work / "raw", IngestConfig(workers=0, shard_max_count=args.shard_clips),
                     progress=False)
    device = torch.device(args.device)
    print(f"\n## tokenize: {summary.accepted} clips, {audio:.0f} s of real speech, {len(summary.shards)} raw "
          f"shards, on {args.device}; every row runs data_pipeline.tokens.tokenize.tokenize_shards (what "
          "scripts/tokenize_shards.py runs) on the same shards with the same codec instance")
    print("wall = audio seconds per wall second; cpu = audio seconds per CPU second of this process (robust "
          "to other load on a shared machine with 1 thread; with more threads it also counts spin-waits); "
          "ratio = against the one-file-per-forward row of the same codec and thread count")
    print(f"{'codec':<22} {'threads':>7} {'mode':<20} {'forwards':>8} {'padding':>8} {'wall s':>7} "
          f"{'wall':>6} {'ratio':>6} {'cpu s':>7} {'cpu':>6} {'ratio':>6} {'encode share':>12}")
    modes = [("one file per forward", 0.0)] + [(f"batched {b:g} s", b) for b in args.batch_seconds]
    for spec in args.codec:
        codec = load_codec(spec, device=device)
        codec.encode(torch.zeros(1, 1, codec.sample_rate, device=device))  # warm-up: kernels, allocator
        for threads in args.threads:
            if device.type == "cpu":
                torch.set_num_threads(threads)
            base_wall = base_cpu = None
            for name, batch_seconds in modes:
                out = work / f"tok-{threads}-{batch_seconds}"
                cfg = TokenizeConfig(codec=spec, batch_seconds=batch_seconds, device=args.device, align="off",
                                     progress=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall, cpu = time.perf_counter(), time.process_time()
                run = tokenize_shards(work / "raw", out, cfg, codec=codec)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                padding = [json.loads(p.read_text())["padding"] for p in (out / SUMMARY_DIR).glob("*.json")]
                speed, cpu_speed = run.audio_seconds / wall, run.audio_seconds / cpu
                base_wall, base_cpu = base_wall or speed, base_cpu or cpu_speed
                print(f"{spec[-22:]:<22} {threads:>7} {name:<20} {run.forwards:>8} {np.mean(padding):>8.1%} "
                      f"{wall:>7.1f} {speed:>6.1f} {speed / base_wall:>5.2f}x {cpu:>7.1f} {cpu_speed:>6.1f} "
                      f"{cpu_speed / base_cpu:>5.2f}x {run.encode_seconds / wall:>12.0%}")
                shutil.rmtree(out)


def _decoded(tokenizer: ShardTokenizer, raw: Path) -> list[list[_Clip]]:
    """Every raw shard's clips decoded and resampled as tokenize does it (through its private steps: this
    benchmark measures them)."""
    shards = []
    for url in expand_shards(str(raw)):
        clips = []
        for key, members in read_raw_shard(url, []):
            clip = _Clip(index=len(clips), key=key, meta={})
            tokenizer._decode(clip, members)
            clips.append(clip)
        shards.append(clips)
    return shards


def _median_times(fn, rounds: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `fn()` over `rounds` calls."""
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def bench_overhead(args: argparse.Namespace, work: Path) -> None:
    """The share of a tokenize run outside the codec forwards, and the codec's bare forward throughput."""
    device = torch.device(args.device)
    print(f"\n## overhead outside the codec forward: tokenize_shards (default batching for the device), "
          f"{args.rounds} rounds, medians. 'in run' = codec.encode calls timed inside the run; outside = "
          "1 - in run / tokenize; bare = codec.encode alone on the same padded batches, interleaved with the "
          "runs (the codec's own throughput, in audio s per CPU s); parts = the steps around the forward, "
          "each timed alone (CPU s)")
    print(f"{'codec':<22} {'threads':>7} {'audio s':>7} {'tokenize cpu':>12} {'in run':>6} {'outside':>7} "
          f"{'wall outside':>12} {'bare cpu':>8} {'bare speed':>10} {'tokenize speed':>14} "
          f"{'decode+resample':>15} {'pad':>6} {'write':>6}")
    for spec in args.codec:
        codec = load_codec(spec, device=device)
        codec.encode(torch.zeros(1, 1, codec.sample_rate, device=device))
        for threads in args.threads:
            if device.type == "cpu":
                torch.set_num_threads(threads)
            print(_overhead_row(spec, codec, args, work, threads))


def _overhead_row(spec: str, codec, args: argparse.Namespace, work: Path, threads: int) -> str:
    raw, device = work / "raw", torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cfg = TokenizeConfig(codec=spec, device=args.device, align="off", progress=False)
    tokenizer = ShardTokenizer(codec, spec, cfg)
    shards = _decoded(tokenizer, raw)
    batches = [pad_batch([c.wav for c in b]) for clips in shards for b in tokenizer._batches(clips)]
    forward = codec.encode
    inside = [0.0, 0.0]  # CPU, wall seconds in codec.encode during a run

    def timed_forward(*a, **k):
        cpu, wall = time.process_time(), time.perf_counter()
        out = forward(*a, **k)
        sync()
        inside[0] += time.process_time() - cpu
        inside[1] += time.perf_counter() - wall
        return out

    def bare() -> None:
        for wav, lengths in batches:
            forward(wav.to(device), lengths.to(device), sample_rate=codec.sample_rate)
        sync()

    def run() -> float:
        out = work / "tok-overhead"
        shutil.rmtree(out, ignore_errors=True)
        return tokenize_shards(raw, out, cfg, codec=codec).audio_seconds

    bare(), run()  # warm-up of every shape
    rows = []
    codec.encode = timed_forward  # this instance only, for the runs
    try:
        for _ in range(args.rounds):
            inside[:] = [0.0, 0.0]
            cpu, wall = time.process_time(), time.perf_counter()
            audio = run()
            sync()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            bare_cpu = _median_times(bare, 1)[1]
            rows.append((cpu, inside[0] / cpu, 1 - inside[1] / wall, bare_cpu))
    finally:
        del codec.encode
    cpu, share_in, wall_outside, bare_cpu = (float(np.median([r[i] for r in rows])) for i in range(4))
    parts = _overhead_parts(tokenizer, raw, work / "tok-parts")
    return (f"{spec[-22:]:<22} {threads:>7} {audio:>7.0f} {cpu:>12.2f} {share_in * cpu:>6.2f} "
            f"{1 - share_in:>7.1%} {wall_outside:>12.1%} {bare_cpu:>8.2f} {audio / bare_cpu:>10.1f} "
            f"{audio / cpu:>14.1f} {parts['decode']:>15.3f} {parts['pad']:>6.3f} {parts['write']:>6.3f}")


def _overhead_parts(tokenizer: ShardTokenizer, raw: Path, out: Path) -> dict[str, float]:
    """CPU seconds of the steps around the forward, each run alone on the same shards."""
    start = time.process_time()
    shards = _decoded(tokenizer, raw)
    decode = time.process_time() - start
    start = time.process_time()
    for clips in shards:
        for batch in tokenizer._batches(clips):
            pad_batch([c.wav for c in batch])
    pad = time.process_time() - start
    out.mkdir(parents=True, exist_ok=True)
    codes = {}
    for clips in shards:  # codes of the right shape (their values do not matter for writing)
        for clip in clips:
            frames = -(-clip.wav.shape[-1] // tokenizer.codec.hop_length)
            codes[clip.key] = np.zeros((tokenizer.codec.num_codebooks, frames), tokenizer.dtype)
    start = time.process_time()
    for i, clips in enumerate(shards):
        for clip in clips:
            clip.codes = codes[clip.key]
        samples = [tokenizer._sample(c, f"raw-{i:06d}.tar") for c in clips]
        write_tar(out / f"tokens-{i:06d}.tar", samples)
    write = time.process_time() - start
    return {"decode": decode, "pad": pad, "write": write}


def bench_batch_scaling(args: argparse.Namespace) -> None:
    """CPU (or GPU) seconds of codec.encode per audio second for B equal-length clips of --clip-seconds."""
    device = torch.device(args.device)
    print(f"\n## codec encode cost vs batch size: {args.clip_seconds:g} s clips of noise at the codec rate, "
          f"ms of {'CPU' if device.type == 'cpu' else 'wall'} time per audio second (median of 3 interleaved "
          "rounds)")
    sizes = [1, 2, 4, 8, 16]
    columns = " ".join(f"{f'B={b}':>7}" for b in sizes)
    print(f"{'codec':<22} {'threads':>7} {columns} {'B=16 / B=1':>10}")
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    for spec in args.codec:
        codec = load_codec(spec, device=device)
        for threads in args.threads:
            if device.type == "cpu":
                torch.set_num_threads(threads)
            wavs = [0.1 * torch.randn(b, 1, int(args.clip_seconds * codec.sample_rate), device=device)
                    for b in sizes]
            for wav in wavs:  # warm-up of every shape first: allocator growth, kernel choice
                codec.encode(wav)
            times: list[list[float]] = [[] for _ in sizes]
            for _ in range(3):  # rounds over all sizes, so a drifting machine load hits every size alike
                for i, wav in enumerate(wavs):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = clock()
                    codec.encode(wav)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times[i].append(clock() - start)
            costs = [1e3 * float(np.median(t)) / (b * args.clip_seconds)
                     for t, b in zip(times, sizes, strict=True)]
            print(f"{spec[-22:]:<22} {threads:>7} " + " ".join(f"{c:>7.1f}" for c in costs)
                  + f" {costs[-1] / costs[0]:>9.2f}x")


def write_length_shards(out: Path, utterances: int, per_shard: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(mean=np.log(5.0), sigma=0.6, size=utterances), 0.6, 19.5)
    out.mkdir(parents=True)
    for s in range(0, utterances, per_shard):
        samples = []
        for i in range(s, min(s + per_shard, utterances)):
            frames = int(seconds[i] * 75)
            meta = TokenMeta(text="x", speaker=f"spk{i // 20}", duration=seconds[i], sample_rate=24000,
                             source="synthetic", codec="synthetic", frame_rate=75.0, num_frames=frames,
                             num_codebooks=1)
            samples.append(token_sample(f"u{i:07d}", np.zeros((1, frames), np.int16), meta))
        write_shard_atomically(out / f"tokens-{s // per_shard:06d}.tar", samples)


def bench_padding(args: argparse.Namespace, work: Path) -> None:
    shards = work / "lengths"
    write_length_shards(shards, args.utterances, 500, seed=0)
    print(f"\n## loader padding: {args.utterances} utterances, log-normal lengths (median 5 s, 0.6-19.5 s), "
          f"max_frames {args.max_frames}, shuffle buffer 1000")
    print(f"{'batching':<22} {'batches':>8} {'mean B':>7} {'padding':>8} {'budget used':>12} {'wall s':>7}")
    for name, ratio in (("no buckets", None), ("buckets x1.05", 1.05), ("buckets x1.10", 1.10)):
        batching = BatchingConfig(max_frames=args.max_frames, bucket_ratio=ratio, min_seconds=0.5,
                                  max_seconds=20.0)
        config = LoaderConfig(shards=str(shards), batching=batching, infinite=False)
        loader = TokenLoader(config, lambda text: [1])
        real = padded = batches = items = 0
        start = time.perf_counter()
        for batch in loader:
            real += int(batch.frame_lengths.sum())
            padded += batch.codes.shape[0] * batch.codes.shape[-1]
            batches += 1
            items += batch.codes.shape[0]
            assert padding_fraction(batch.frame_lengths) < 1
        wall = time.perf_counter() - start
        print(f"{name:<22} {batches:>8} {items / batches:>7.1f} {1 - real / padded:>8.1%} "
              f"{padded / batches / args.max_frames:>12.1%} {wall:>7.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", nargs="+", default=["models/codec_rvq16k", "encodec_24khz:random"],
                   help="codec specs, each measured in the same table (default: %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=150.0, help="audio to tokenize (default: %(default)s)")
    p.add_argument("--batch-seconds", type=float, nargs="+", default=[8.0, 30.0, 120.0],
                   help="padded-audio budgets of the batched runs (default: %(default)s)")
    p.add_argument("--shard-clips", type=int, default=1000, help="clips per raw shard (default: %(default)s)")
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                   help="torch CPU thread counts to compare (default: all cores)")
    p.add_argument("--utterances", type=int, default=20000,
                   help="for the padding part (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=BatchingConfig().max_frames)
    p.add_argument("--clip-seconds", type=float, default=5.0, help="clip length of the batch-size table")
    p.add_argument("--rounds", type=int, default=3, help="overhead table rounds (default: %(default)s)")
    p.add_argument("--skip-tokenize", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-padding", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp:
        if not args.skip_tokenize:
            bench_tokenize(args, Path(tmp))
            bench_overhead(args, Path(tmp))
        if not args.skip_scaling:
            bench_batch_scaling(args)
        if not args.skip_padding:
            bench_padding(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
