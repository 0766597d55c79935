#!/usr/bin/env python
"""Generation speed: AR tokens/s with the static KV cache vs full recompute, NAR time, codec decode time
+ RTF, and the memory-bandwidth floor of one decode step, for several presets in one run.

    python scripts/bench_generate.py                       # tiny + small, 375 frames, CPU, 1 thread
    python scripts/bench_generate.py --compile             # the same with the compiled CPU decode step
    python scripts/bench_generate.py --presets large --frames 375 --device cuda --dtype bfloat16 --compile

Floor: a batch-1 decode step must read every AR weight once (the input embedding table only one row, the
code head included) plus the filled part of the KV cache, so tokens/s <= bandwidth / bytes per step.
Bandwidth is the larger of two streaming rates measured in the same run: a large tensor copy counted the
STREAM way (bytes read + bytes written) and a read-only reduction (sum) over a large tensor. "share" = floor
time / measured step time, where the step, the bare matrix-vector products and the bandwidth are timed in
alternation (medians of --rounds), so a shared machine's drifting load affects them alike.
Clock: on the CPU with one thread the default is the thread's CPU time (time.thread_time), which a shared,
oversubscribed machine does not inflate with time spent waiting for a core (memory-bandwidth contention
from other processes still counts, in the step and the bandwidth alike); "KV wall t/s" gives the wall-clock
rate of the same run. Several threads or a GPU: wall time.
Full recompute is timed for real when it is short (--full-recompute forces it); otherwise it is timed at
--recompute-samples evenly spaced sequence lengths and integrated over the generation (per-step cost is
smooth in the length), which the table says in its "method" column.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

import torch

from lm.inference.ar_loop import generate_ar
from lm.inference.decode_steps import decode_fn, prefill, recompute_logits, static_decode_shapes
from lm.inference.nar_pass import generate_nar
from lm.inference.sampling import SamplingConfig, sample
from lm.model.config import get_preset
from lm.model.model import TTSModel
from lm.model.sequence import inference_delayed, inference_prompt, pad_left

log = logging.getLogger("bench_generate")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# the clock every figure uses; main() switches it to time.thread_time for a single-threaded CPU run
CLOCK = {"fn": time.perf_counter, "name": "wall"}


def timed(fn, device: torch.device, reps: int = 1) -> tuple[float, object]:
    """Median time of `reps` calls (seconds, on CLOCK) and the last result."""
    times, out = [], None
    for _ in range(reps):
        sync(device)
        start = CLOCK["fn"]()
        out = fn()
        sync(device)
        times.append(CLOCK["fn"]() - start)
    return statistics.median(times), out


def stream_bandwidth(device: torch.device, megabytes: int = 256, reps: int = 4) -> tuple[float, float]:
    """(copy, read) bytes per second on a tensor far larger than the caches: dst.copy_(src) counted as
    bytes read + bytes written (STREAM's convention), and src.sum() (a pure read)."""
    src = torch.randn(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    size = src.numel() * src.element_size()
    dst.copy_(src)
    src.sum()
    copy_s, _ = timed(lambda: [dst.copy_(src) for _ in range(reps)], device)
    read_s, _ = timed(lambda: [src.sum() for _ in range(reps)], device)
    return reps * 2 * size / copy_s, reps * size / read_s


def step_bytes(model: TTSModel, filled_slots: int) -> tuple[int, int]:
    """(weight bytes, KV-cache bytes) a batch-1 decode step reads: every AR weight (code heads and norms
    included) except the input embedding tables, of which one row each; K and V of every layer over the
    filled slots."""
    ar, config = model.ar, model.config
    tables = [ar.model.embed_tokens.weight, *(e.weight for e in ar.delayed_embeds)]
    weights = sum(p.numel() * p.element_size() for p in ar.parameters() if all(p is not t for t in tables))
    weights += sum(t.shape[1] * t.element_size() for t in tables)
    embed = tables[0]
    kv = 2 * config.ar_num_layers * config.ar_num_kv_heads * ar.head_dim * filled_slots * embed.element_size()
    return weights, kv


def linear_weights(model: TTSModel) -> list[torch.Tensor]:
    """Every matrix a decode step multiplies by (the AR's Linear layers + the code head)."""
    return [m.weight for m in model.ar.modules() if isinstance(m, torch.nn.Linear)]


def interleaved_step_costs(
    model: TTSModel, prefix: int, frames: int, args: argparse.Namespace, device: torch.device, steps: int = 20
) -> dict[str, float]:
    """Median seconds of one KV-cache decode step (+ sampling) at mid-generation, run exactly as generate_ar
    runs it (compiled or not), of the bare matrix-vector products of one step, and the copy / read
    bandwidths, measured in alternation so a drifting machine load hits them alike."""
    ar, vocab = model.ar, model.vocab
    slot = prefix + frames // 2
    token = torch.full((1, 1), vocab.audio_offset + 1, device=device)
    pads = torch.zeros(1, dtype=torch.long, device=device)
    pos = torch.tensor([slot], device=device)
    knobs = [
        torch.ones(1, 1, device=device),
        torch.full((1, 1), 50, device=device),
        torch.ones(1, 1, device=device),
    ]
    step_fn = decode_fn(args.compile, device)
    kv_len = None if static_decode_shapes(args.compile, device) else slot + 1
    weights = linear_weights(model)
    inputs = {w.shape[1]: torch.randn(1, 1, w.shape[1], device=device, dtype=w.dtype) for w in weights}
    gen = torch.Generator(device=device).manual_seed(0)

    def decode_steps():
        for _ in range(steps):
            sample(step_fn(ar, token, pos, pads, kv_len)[0], *knobs, gen)

    def matvec_steps():
        for _ in range(steps):
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)

    step, matvec, copy, read = [], [], [], []
    with torch.inference_mode():
        decode_steps()
        matvec_steps()
        for _ in range(args.rounds):
            step.append(timed(decode_steps, device)[0] / steps)
            matvec.append(timed(matvec_steps, device)[0] / steps)
            rates = stream_bandwidth(device)
            copy.append(rates[0])
            read.append(rates[1])
    return {
        "step_s": statistics.median(step),
        "matvec_s": statistics.median(matvec),
        "copy_bw": statistics.median(copy),
        "read_bw": statistics.median(read),
        "filled_slots": slot + 1,
    }


def bench_preset(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    config = get_preset(name).replace(ar_codebooks=args.ar_codebooks)
    model = TTSModel(config).to(device=device, dtype=args.dtype).eval()
    vocab, frames = model.vocab, args.frames
    gen = torch.Generator(device=device).manual_seed(0)
    text = torch.randint(0, config.text_vocab_size, (args.text_len,))
    prompt_codes = torch.randint(0, config.codebook_size, (config.num_codebooks, args.prompt_frames))
    prompt = inference_prompt(vocab, text, prompt_codes[0])
    delayed_kwargs, delayed_prefix = {}, None
    if config.ar_codebooks > 1:  # the AR also predicts codebook 2 (delay pattern)
        delayed_prefix, first = inference_delayed(text, prompt_codes[1 : config.ar_codebooks])
        delayed_kwargs = {"delayed_prefixes": [delayed_prefix], "first_delayed": first[None]}
        delayed_prefix = delayed_prefix[None].to(device)
    text_lengths = torch.tensor([args.text_len])
    # exactly `frames` frames: <eos> is barred before `frames` and forced at `frames`
    sampling = SamplingConfig(temperature=1.0, top_k=50, min_new_frames=frames, max_new_frames=frames)
    warm = SamplingConfig(temperature=1.0, top_k=50, min_new_frames=16, max_new_frames=16)

    def cached(s: SamplingConfig = sampling):
        return generate_ar(model, [prompt], text_lengths, s, gen, compile_step=args.compile, **delayed_kwargs)

    for _ in range(2 if args.compile else 1):
        cached(warm)
    wall_start = time.perf_counter()
    t_cached, result = timed(cached, device)
    wall_cached = time.perf_counter() - wall_start
    assert int(result.lengths[0]) == frames, "the benchmark must decode exactly --frames frames"
    tokens, pads = pad_left([prompt])
    tokens, pads = tokens.to(device), pads.to(device)
    with torch.inference_mode():
        model.ar.setup_cache(1, tokens.shape[1] + frames + 1)
        t_prefill, _ = timed(lambda: prefill(model.ar, tokens, pads, delayed_prefix), device, reps=3)
    decode_tps = (frames - 1) / (t_cached - t_prefill)  # steps after prefill; the first frame comes from it
    costs = interleaved_step_costs(model, tokens.shape[1], frames, args, device)

    # full recompute baseline
    prefix = tokens.shape[1]
    full = args.full_recompute or name == "tiny"
    if full:
        t_recompute, _ = timed(
            lambda: generate_ar(
                model, [prompt], text_lengths, sampling, gen, use_cache=False, **delayed_kwargs
            ),
            device,
        )
        method = "full run"
    else:
        seq = torch.cat([tokens, torch.randint(0, config.codebook_size, (1, frames), device=device)], dim=1)
        seq[:, prefix:] += vocab.audio_offset
        lengths = torch.linspace(prefix, prefix + frames - 1, args.recompute_samples).round().long().tolist()
        with torch.inference_mode():
            recompute_logits(model.ar, seq[:, :prefix], pads)  # warm-up
            per_step = [
                timed(lambda n=n: recompute_logits(model.ar, seq[:, :n], pads), device)[0] for n in lengths
            ]
        t_recompute = statistics.fmean(per_step) * frames
        method = f"{args.recompute_samples} lengths"

    # NAR: Q - ar_codebooks passes over the whole target
    ar_codes = result.codes[:, None]
    if result.delayed_codes is not None:
        ar_codes = torch.cat([ar_codes, result.delayed_codes], dim=1)
    with torch.inference_mode():
        nar_args = (
            text[None].to(device),
            text_lengths.to(device),
            prompt_codes[None].to(device),
            torch.tensor([args.prompt_frames], device=device),
            ar_codes,
            result.lengths,
        )
        generate_nar(model, *nar_args[:4], ar_codes[..., :8], result.lengths.clamp(max=8))  # warm-up
        t_nar, codes = timed(lambda: generate_nar(model, *nar_args), device)

    weight_bytes, kv_bytes = step_bytes(model, costs["filled_slots"])
    bandwidth = max(costs["copy_bw"], costs["read_bw"])
    floor_s = (weight_bytes + kv_bytes) / bandwidth
    row = {
        "preset": name if config.ar_codebooks == 1 else f"{name}/ar{config.ar_codebooks}",
        "params_M": model.num_parameters() / 1e6,
        "step_MB": (weight_bytes + kv_bytes) / 1e6,
        "kv_MB": kv_bytes / 1e6,
        "copy_bw": costs["copy_bw"],
        "read_bw": costs["read_bw"],
        "floor_tps": 1.0 / floor_s,
        "step_tps": 1.0 / costs["step_s"],
        "share": floor_s / costs["step_s"],
        "matvec_share": costs["matvec_s"] / costs["step_s"],
        "kv_tps": decode_tps,
        "kv_total_s": t_cached,
        "kv_wall_s": wall_cached,
        "prefill_ms": t_prefill * 1e3,
        "recompute_tps": frames / t_recompute,
        "method": method,
        "speedup": t_recompute / t_cached,
        "nar_s": t_nar,
        "codes": codes,
    }
    return row


def bench_codec(rows: list[dict], args: argparse.Namespace, device: torch.device) -> None:
    """Decode each preset's codes with the random EnCodec; RTF = (AR + NAR + codec) / audio seconds."""
    try:
        from codec.base import load_codec
    except ImportError as err:  # the codec package is optional for this benchmark
        log.warning("codec unavailable (%s): no codec decode / RTF", err)
        return
    codec = load_codec(args.codec, device=device)
    for row in rows:
        codes = row["codes"]
        if codes.shape[1] != codec.num_codebooks:
            log.warning(
                "%s: %d codebooks but codec has %d; skipping RTF",
                row["preset"],
                codes.shape[1],
                codec.num_codebooks,
            )
            continue
        with torch.inference_mode():
            codec.decode(codes[..., :16])
            t_codec, _ = timed(lambda c=codes: codec.decode(c), device)
        audio_s = args.frames / codec.frame_rate
        row["codec_s"] = t_codec
        row["rtf"] = (row["kv_total_s"] + row["nar_s"] + t_codec) / audio_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument(
        "--frames", type=int, default=375, help="target frames to decode (375 = 5 s at 75 Hz)"
    )
    parser.add_argument("--text-len", type=int, default=60, help="text pieces in the prompt")
    parser.add_argument("--prompt-frames", type=int, default=225, help="voice prompt frames (225 = 3 s)")
    parser.add_argument("--recompute-samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7, help="alternating step / matvec / copy timings")
    parser.add_argument("--full-recompute", action="store_true", help="time the whole recompute run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the decode step (as generate.py --compile)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default); 1 suits batch-1 decoding on a shared machine",
    )
    parser.add_argument(
        "--clock",
        default="auto",
        choices=["auto", "cpu", "wall"],
        help="auto: thread CPU time on a 1-thread CPU run, else wall time",
    )
    parser.add_argument("--codec", default="encodec_24khz:random")
    parser.add_argument("--ar-codebooks", type=int, default=1, choices=[1, 2],
                        help="codebooks the AR predicts (2: codebook 2 rides one frame late, "
                             "lm/model/sequence.py)")
    parser.add_argument("--note", default="", help="printed under the table (e.g. what else runs here)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    single = device.type == "cpu" and torch.get_num_threads() == 1
    if args.clock == "cpu" and not single:
        parser.error("--clock cpu needs --device cpu --threads 1 (a thread's CPU time misses other threads)")
    if args.clock == "cpu" or (args.clock == "auto" and single):
        CLOCK.update(fn=time.thread_time, name="thread CPU time")

    load_before = os.getloadavg()[0]
    rows = []
    for name in args.presets:
        rows.append(bench_preset(name, args, device))
    bench_codec(rows, args, device)
    load = f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"

    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(
        f"\n{where} ({load}), {args.dtype}, prefix = {args.text_len} text pieces + {args.prompt_frames} "
        f"prompt frames, {args.frames} frames decoded, compile={args.compile}, clock: {CLOCK['name']}"
    )
    columns = [  # (title, width, format of one row)
        ("preset", 9, lambda r: f"{r['preset']:<9}"),
        ("params", 8, lambda r: f"{r['params_M']:7.1f}M"),
        ("MB/step", 8, lambda r: f"{r['step_MB']:8.1f}"),
        ("KV MB", 6, lambda r: f"{r['kv_MB']:6.1f}"),
        ("copy GB/s", 10, lambda r: f"{r['copy_bw'] / 1e9:10.1f}"),
        ("read GB/s", 10, lambda r: f"{r['read_bw'] / 1e9:10.1f}"),
        ("floor t/s", 10, lambda r: f"{r['floor_tps']:10.1f}"),
        ("step t/s", 9, lambda r: f"{r['step_tps']:9.1f}"),
        ("share", 6, lambda r: f"{r['share']:6.0%}"),
        ("matvec", 7, lambda r: f"{r['matvec_share']:7.0%}"),
        ("KV t/s", 8, lambda r: f"{r['kv_tps']:8.1f}"),
        ("recomp t/s", 11, lambda r: f"{r['recompute_tps']:11.2f}"),
        ("method", 10, lambda r: f"{r['method']:>10}"),
        ("speedup", 8, lambda r: f"{r['speedup']:7.1f}x"),
        ("KV s", 7, lambda r: f"{r['kv_total_s']:7.2f}"),
        ("wall s", 7, lambda r: f"{r['kv_wall_s']:7.2f}"),
        ("prefill ms", 11, lambda r: f"{r['prefill_ms']:11.1f}"),
        ("NAR s", 8, lambda r: f"{r['nar_s']:8.2f}"),
        ("codec s", 8, lambda r: f"{r['codec_s']:8.2f}" if "codec_s" in r else f"{'n/a':>8}"),
        ("RTF", 7, lambda r: f"{r['rtf']:7.2f}" if "rtf" in r else f"{'n/a':>7}"),
    ]
    header = "".join(
        f"{title:<{width}}" if i == 0 else f"{title:>{width}}" for i, (title, width, _) in enumerate(columns)
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print("".join(fmt(r) for _, _, fmt in columns))
    print(
        "MB/step = AR weights read by one batch-1 step (code head included, one embedding row) + the KV "
        "cache filled at mid-generation (KV MB); copy = STREAM-style (bytes read + written), read = sum over "
        "a large tensor; floor = MB/step / max(copy, read); step t/s = one KV decode step + sampling at "
        "mid-generation; share = floor time / step time; matvec = share of the step spent in its bare "
        "matrix-vector products; KV t/s = end-to-end generate_ar after prefill; speedup = recompute time / "
        "KV time for the whole utterance (prefill included); KV s / wall s = that cached run on the clock / "
        "on the wall; RTF = (KV s + NAR s + codec s) / audio seconds"
    )
    if args.note:
        print(f"note: {args.note}")
    print("targets: small preset KV speedup >= 5x at 375 frames; share of the bandwidth floor >= 70%")


if __name__ == "__main__":
    main()
