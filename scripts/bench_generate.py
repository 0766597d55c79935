#!/usr/bin/env python
"""Generation speed: AR tokens/s with the static KV cache vs full recompute, NAR time, codec decode time
+ RTF, and the memory-bandwidth floor of one decode step, for several presets in one run.

    python scripts/bench_generate.py                       # tiny + small, 375 frames, CPU
    python scripts/bench_generate.py --presets small --frames 375 --device cuda --dtype bfloat16 --compile

Floor: a batch-1 decode step must read every AR weight once (the input embedding table only one row), so
tokens/s <= copy bandwidth / weight bytes. Copy bandwidth is measured in the same run as bytes of a large
tensor copy per second (the tensor size counted once). "share" = floor time / measured step time, where
step, bare matrix-vector products and copy bandwidth are timed in alternation (medians of --rounds), so a
shared machine's drifting load affects them alike.
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

from lm.config import get_preset
from lm.generate import (
    SamplingConfig,
    decode_one_token,
    generate_ar,
    generate_nar,
    prefill,
    recompute_logits,
)
from lm.model import TTSModel
from lm.sampling import sample
from lm.sequence import inference_prompt, pad_left

log = logging.getLogger("bench_generate")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int = 1) -> tuple[float, object]:
    """Median wall time of `reps` calls (seconds) and the last result."""
    times, out = [], None
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def copy_bandwidth(device: torch.device, megabytes: int = 512, reps: int = 10) -> float:
    """Bytes per second of dst.copy_(src) on a tensor far larger than the caches (size counted once)."""
    src = torch.randn(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    seconds, _ = timed(lambda: [dst.copy_(src) for _ in range(reps)], device)
    return reps * src.numel() * src.element_size() / seconds


def ar_weight_bytes(model: TTSModel) -> int:
    """Bytes a batch-1 decode step reads: every AR weight except the input embedding table."""
    return sum(
        p.numel() * p.element_size()
        for n, p in model.ar.named_parameters()
        if not n.endswith("embed_tokens.weight")
    )


def linear_weights(model: TTSModel) -> list[torch.Tensor]:
    """Every matrix a decode step multiplies by (the AR's Linear layers + the code head)."""
    return [m.weight for m in model.ar.modules() if isinstance(m, torch.nn.Linear)]


def interleaved_step_costs(
    model: TTSModel, prefix: int, frames: int, rounds: int, device: torch.device, steps: int = 20
) -> dict[str, float]:
    """Median seconds of one KV-cache decode step (+ sampling), of the bare matrix-vector products of one
    step, and the copy bandwidth, measured in alternation so a drifting machine load hits all three alike."""
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
    weights = linear_weights(model)
    inputs = {w.shape[1]: torch.randn(1, 1, w.shape[1], device=device, dtype=w.dtype) for w in weights}
    gen = torch.Generator(device=device).manual_seed(0)

    def decode_steps():
        for _ in range(steps):
            sample(decode_one_token(ar, token, pos, pads, slot + 1), *knobs, gen)

    def matvec_steps():
        for _ in range(steps):
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)

    step, matvec, bandwidth = [], [], []
    with torch.inference_mode():
        decode_steps()
        matvec_steps()
        for _ in range(rounds):
            step.append(timed(decode_steps, device)[0] / steps)
            matvec.append(timed(matvec_steps, device)[0] / steps)
            bandwidth.append(copy_bandwidth(device, megabytes=256, reps=4))
    return {
        "step_s": statistics.median(step),
        "matvec_s": statistics.median(matvec),
        "bandwidth": statistics.median(bandwidth),
    }


def bench_preset(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    config = get_preset(name)
    model = TTSModel(config).to(device=device, dtype=args.dtype).eval()
    vocab, frames = model.vocab, args.frames
    gen = torch.Generator(device=device).manual_seed(0)
    text = torch.randint(0, config.text_vocab_size, (args.text_len,))
    prompt_codes = torch.randint(0, config.codebook_size, (config.num_codebooks, args.prompt_frames))
    prompt = inference_prompt(vocab, text, prompt_codes[0])
    text_lengths = torch.tensor([args.text_len])
    # exactly `frames` frames: <eos> is barred before `frames` and forced at `frames`
    sampling = SamplingConfig(temperature=1.0, top_k=50, min_new_frames=frames, max_new_frames=frames)
    warm = SamplingConfig(temperature=1.0, top_k=50, min_new_frames=16, max_new_frames=16)

    def cached(s: SamplingConfig = sampling):
        return generate_ar(model, [prompt], text_lengths, s, gen, compile_step=args.compile)

    for _ in range(2 if args.compile else 1):
        cached(warm)
    t_cached, result = timed(cached, device)
    assert int(result.lengths[0]) == frames, "the benchmark must decode exactly --frames frames"
    tokens, pads = pad_left([prompt])
    tokens, pads = tokens.to(device), pads.to(device)
    with torch.inference_mode():
        model.ar.setup_cache(1, tokens.shape[1] + frames + 1)
        t_prefill, _ = timed(lambda: prefill(model.ar, tokens, pads), device, reps=3)
    decode_tps = (frames - 1) / (t_cached - t_prefill)  # steps after prefill; the first frame comes from it
    costs = interleaved_step_costs(model, tokens.shape[1], frames, args.rounds, device)

    # full recompute baseline
    prefix = tokens.shape[1]
    full = args.full_recompute or name == "tiny"
    if full:
        t_recompute, _ = timed(
            lambda: generate_ar(model, [prompt], text_lengths, sampling, gen, use_cache=False), device
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

    # NAR: Q-1 passes over the whole target
    with torch.inference_mode():
        nar_args = (
            text[None].to(device),
            text_lengths.to(device),
            prompt_codes[None].to(device),
            torch.tensor([args.prompt_frames], device=device),
            result.codes,
            result.lengths,
        )
        generate_nar(model, *nar_args[:4], result.codes[:, :8], result.lengths.clamp(max=8))  # warm-up
        t_nar, codes = timed(lambda: generate_nar(model, *nar_args), device)

    weight_bytes = ar_weight_bytes(model)
    floor_s = weight_bytes / costs["bandwidth"]
    row = {
        "preset": name,
        "params_M": model.num_parameters() / 1e6,
        "weight_MB": weight_bytes / 1e6,
        "bandwidth": costs["bandwidth"],
        "floor_tps": 1.0 / floor_s,
        "step_tps": 1.0 / costs["step_s"],
        "share": floor_s / costs["step_s"],
        "matvec_share": costs["matvec_s"] / costs["step_s"],
        "kv_tps": decode_tps,
        "kv_total_s": t_cached,
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
    parser.add_argument("--compile", action="store_true", help="torch.compile decode_one_token (GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--codec", default="encodec_24khz:random")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)

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
        f"prompt frames, {args.frames} frames decoded, compile={args.compile}"
    )
    columns = [  # (title, width, format of one row)
        ("preset", 7, lambda r: f"{r['preset']:<7}"),
        ("params", 8, lambda r: f"{r['params_M']:7.1f}M"),
        ("AR MB/step", 11, lambda r: f"{r['weight_MB']:11.1f}"),
        ("copy GB/s", 10, lambda r: f"{r['bandwidth'] / 1e9:10.1f}"),
        ("floor t/s", 10, lambda r: f"{r['floor_tps']:10.1f}"),
        ("step t/s", 9, lambda r: f"{r['step_tps']:9.1f}"),
        ("share", 7, lambda r: f"{r['share']:7.0%}"),
        ("matvec", 7, lambda r: f"{r['matvec_share']:7.0%}"),
        ("KV t/s", 8, lambda r: f"{r['kv_tps']:8.1f}"),
        ("recomp t/s", 11, lambda r: f"{r['recompute_tps']:11.2f}"),
        ("method", 12, lambda r: f"{r['method']:>12}"),
        ("KV speedup", 11, lambda r: f"{r['speedup']:10.1f}x"),
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
        "floor = AR weight bytes / copy bandwidth; step t/s = one KV decode step + sampling at "
        "mid-generation; share = floor time / step time; matvec = share of the step spent in its bare "
        "matrix-vector products; "
        "KV t/s = end-to-end generate_ar after prefill; KV speedup = recompute time / KV time for the "
        "whole utterance (prefill included)"
    )
    print("targets: small preset KV speedup >= 5x at 375 frames; share of the bandwidth floor >= 70%")


if __name__ == "__main__":
    main()
