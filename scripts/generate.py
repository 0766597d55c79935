#!/usr/bin/env python
"""Clone a voice: synthesize TEXT in the voice of a prompt recording.

    python scripts/generate.py --prompt-audio speaker.wav --text "Hello there." --out hello.wav
    python scripts/generate.py --checkpoint runs/demo/train/export --prompt-audio p.flac \\
        --prompt-text "transcript of the prompt" --text "Long text. Several sentences." --out out.wav --seed 1

The default model draws its first codebook in the house voice nearest the prompt and adds the prompt's voice
with the NAR (lm/inference/house_voices.py; README "Round 10: house voices"): on the unseen sentences with
real-voice prompts that reads at capped WER ~34 % where the prompt's own first codebook read at ~56 %.
`--ar-voice prompt` draws it from the prompt's own codes instead (the old way: reads far worse, and
resemblyzer rates it no closer to the prompt: SIM 0.56 vs 0.61); `--ar-voice NAME` picks a house voice.
With the prompt's transcript the prompt is continued (VALL-E continuation mode: the whole clip goes to the NAR
and the codec decoder starts from its sound); without --prompt-text Whisper tiny.en transcribes it (the
`eval` extra, offline; lm/inference/prompt_transcript.py) and the transcript is printed; --speaker-prompt
skips that. If Whisper hears no words, or its words do not fit the audio, it falls back to speaker-prompt
mode and says so. Long text is split at sentence boundaries and generated piece by piece with the same
prompt. Prints the real-time factor.

With --stream the audio is written as it is made (sentence by sentence, and within a sentence in chunks while
the AR is still generating; lm/inference/streaming.py), and the time to the first audio is printed beside the
time to the whole utterance.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import soundfile as sf
import torch

from codec.audio import AudioReadError, load_audio
from lm.inference.export_dir import DEFAULT_MODEL_DIR
from lm.inference.prompt_transcript import PromptTranscriber, TranscriberUnavailable, auto_prompt_text
from lm.inference.streaming import StreamConfig
from lm.inference.synthesis_types import JUDGES, DecodeConfig, SynthesisError, speed_options
from lm.inference.synthesizer import Synthesizer

log = logging.getLogger("generate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt-audio", type=Path, required=True,
                   help="voice prompt: any file soundfile reads, any sample rate / channel count")
    p.add_argument("--text", required=True, help="text to speak")
    p.add_argument("--out", type=Path, required=True, help="output WAV path")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"exported model directory (default: {DEFAULT_MODEL_DIR})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prompt-text", default=None,
                      help="transcript of the prompt (continuation mode); default: Whisper transcribes it")
    mode.add_argument("--speaker-prompt", action="store_true",
                      help="the prompt only sets the voice: no transcript, no Whisper")
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
    p.add_argument("--ar-voice", default=None,
                   help="whose voice the AR draws codebook 1 in: 'house' (the house voice nearest the "
                        "prompt; the default model's default), 'prompt', or a house voice's name")
    p.add_argument("--candidates", type=int, default=None,
                   help="best of N: draw N readings of every sentence and keep the one the judge "
                        "(--judge) hears closest to the text (~N times the decoding; the default model's "
                        "default is stored with it; --stream reads one)")
    p.add_argument("--judge", default=None, choices=JUDGES,
                   help="who picks among the N readings: 'phones' (hama's phone recogniser) or "
                        "'phones+words' (its phone error plus Whisper base's word error; the `eval` extra)")
    p.add_argument("--speed", type=float, default=None,
                   help="speaking rate, 0.25-4 (phone-aligned models: flite's phone lengths at the prompt's "
                        "pace divided by it)")
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter directory (from finetune)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the one-token decode step (CUDA graphs on GPU; pays off on long text)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is fastest for tiny models or "
                        "on a busy machine)")
    p.add_argument("--stream", action="store_true",
                   help="write the audio as it is made and report the time to the first audio")
    p.add_argument("--first-chunk-seconds", type=float, default=StreamConfig.first_chunk_seconds,
                   help="--stream: audio in the first chunk of each sentence (later chunks double)")
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


def transcribe_prompt(synth: Synthesizer, prompt: torch.Tensor, prompt_rate: int) -> str | None:
    """Whisper's transcript of the prompt (continuation mode), or None (speaker-prompt mode)."""
    try:
        text = auto_prompt_text(synth, PromptTranscriber(), prompt, prompt_rate)
    except TranscriberUnavailable as e:
        log.warning("%s; speaker-prompt mode (give --prompt-text for continuation mode)", e)
        return None
    if text is not None:
        print(f"prompt transcript (Whisper): {text}")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    decode = {k: v for k, v in {
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty, "max_seconds": args.max_seconds,
        "ar_voice": args.ar_voice, "candidates": args.candidates, "judge": args.judge,
    }.items() if v is not None}
    decode.update(speed_options(args.speed))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        prompt, prompt_rate = read_prompt(args.prompt_audio)
        synth = Synthesizer.from_pretrained(args.checkpoint or DEFAULT_MODEL_DIR, device=args.device,
                                            adapter=args.adapter, compile_step=args.compile)
        if args.prompt_text is None and not args.speaker_prompt:
            args.prompt_text = transcribe_prompt(synth, prompt, prompt_rate)
        if args.stream:
            return stream_to_file(synth, args, prompt, prompt_rate, decode)
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


def stream_to_file(synth: Synthesizer, args: argparse.Namespace, prompt: torch.Tensor, prompt_rate: int,
                   decode: dict) -> int:
    """--stream: each chunk is appended to the WAV file as it arrives; the times printed are wall-clock from
    the call (prompt encoding included, as in `synthesize`'s numbers)."""
    start = time.perf_counter()
    chunks = synth.stream(args.text, prompt, prompt_rate, prompt_text=args.prompt_text, seed=args.seed,
                          stream_config=StreamConfig(first_chunk_seconds=args.first_chunk_seconds), **decode)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    first_audio, samples, seed, count = None, 0, None, 0
    with sf.SoundFile(str(args.out), "w", samplerate=synth.sample_rate, channels=1, subtype="PCM_16") as out:
        for chunk in chunks:
            out.write(chunk.wav)
            out.flush()
            count, samples, seed = count + 1, samples + len(chunk.wav), chunk.seed
            if first_audio is None:
                first_audio = time.perf_counter() - start
            log.debug("chunk %d: piece %d/%d, %.2f s of audio at %.2f s", count, chunk.piece + 1,
                      chunk.num_pieces, chunk.seconds, time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    seconds = samples / synth.sample_rate
    print(f"audio        {seconds:.2f} s at {synth.sample_rate} Hz in {count} chunk(s), seed {seed}")
    print(f"first audio  {first_audio:.2f} s (whole utterance {elapsed:.2f} s)")
    print(f"wrote {args.out}")
    print(f"RTF {elapsed / seconds:.3f}" if seconds else "RTF inf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
