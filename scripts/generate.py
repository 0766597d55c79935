#!/usr/bin/env python
"""Clone a voice: synthesize TEXT in the voice of a prompt recording.

    python scripts/generate.py --prompt-audio speaker.wav --text "Hello there." --out hello.wav
    python scripts/generate.py --checkpoint runs/demo/train/export --prompt-audio p.flac \\
        --prompt-text "transcript of the prompt" --text "Long text. Several sentences." --out out.wav --seed 1

Without --prompt-text the prompt only sets the voice (speaker-prompt mode); with it, the model continues
the prompt (VALL-E continuation mode), which usually follows the voice more closely. Long text is split at
sentence boundaries and generated piece by piece with the same prompt. Prints the real-time factor.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import soundfile as sf
import torch

from codec.audio import AudioReadError, load_audio
from lm.synthesizer import DEFAULT_MODEL_DIR, DecodeConfig, SynthesisError, Synthesizer

log = logging.getLogger("generate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt-audio", type=Path, required=True,
                   help="voice prompt: any file soundfile reads, any sample rate / channel count")
    p.add_argument("--text", required=True, help="text to speak")
    p.add_argument("--out", type=Path, required=True, help="output WAV path")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"exported model directory (default: {DEFAULT_MODEL_DIR})")
    p.add_argument("--prompt-text", default=None, help="transcript of the prompt: enables continuation mode")
    p.add_argument("--seed", type=int, default=None, help="random seed (printed when not given)")
    d = DecodeConfig()
    p.add_argument("--temperature", type=float, default=None, help=f"0 = greedy (default {d.temperature})")
    p.add_argument("--top-k", type=int, default=None, help=f"0 = off (default {d.top_k})")
    p.add_argument("--top-p", type=float, default=None, help=f"1 = off (default {d.top_p})")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help=f"> 1 discourages codes repeated in the last {d.repetition_window} frames "
                        f"(default {d.repetition_penalty})")
    p.add_argument("--max-seconds", type=float, default=None,
                   help=f"cap on the audio generated per sentence (default {d.max_seconds})")
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter directory (from finetune)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the one-token decode step (CUDA graphs on GPU; pays off on long text)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is fastest for tiny models or "
                        "on a busy machine)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def read_prompt(path: Path) -> tuple[torch.Tensor, int]:
    """The prompt as float32 [C, T] plus its sample rate; SynthesisError names the file and the reason."""
    if not path.is_file():
        raise SynthesisError(f"prompt audio not found: {path}")
    try:
        wav, sample_rate = load_audio(path)
    except AudioReadError as e:
        raise SynthesisError(f"cannot read prompt audio {path}: {e.reason}") from e
    if wav.shape[-1] == 0:
        raise SynthesisError(f"prompt audio {path} is empty")
    return wav, sample_rate


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    decode = {k: v for k, v in {
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty, "max_seconds": args.max_seconds,
    }.items() if v is not None}
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        prompt, prompt_rate = read_prompt(args.prompt_audio)
        synth = Synthesizer.from_pretrained(args.checkpoint or DEFAULT_MODEL_DIR, device=args.device,
                                            adapter=args.adapter, compile_step=args.compile)
        result = synth.synthesize(args.text, prompt, prompt_rate, prompt_text=args.prompt_text,
                                  seed=args.seed, **decode)
    except SynthesisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out), result.wav, result.sample_rate, subtype="PCM_16")
    print(result.summary())
    print(f"wrote {args.out}")
    print(f"RTF {result.rtf:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
