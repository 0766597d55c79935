#!/usr/bin/env python
"""Who should the AR speak as? The clips of token shards synthesised with the AR prompted by the clip's own
speaker prompt, and by each house voice in turn, the NAR always by the clip's prompt; Whisper WER, DNSMOS and
resemblyzer SIM to the prompt per row, plus the nearest-house-voice choice (README "Round 10: house voices").

    python scripts/experiments/house_voice_stages.py --checkpoint models/default \
        --shards runs/diag/tokens_v3 --limit 44 --out runs/house_stages.jsonl

Pairing and phones as scripts/diagnose_stages.py (speaker-prompt mode, the advance head's durations); the
house voices are the export's bank (house_voices.safetensors). One JSON line per clip; a summary at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: diagnose_stages
from diagnose_stages import clips  # noqa: E402

from evaluation.asr import ASRConfig, WhisperASR  # noqa: E402
from evaluation.quality import DNSMOS  # noqa: E402
from lm.inference.generate import TTSRequest, generate  # noqa: E402
from lm.inference.speaker_embedding import SpeakerEncoder, cosine  # noqa: E402
from lm.inference.synthesizer import Synthesizer  # noqa: E402


def synthesize(synth: Synthesizer, sampling, text_ids: torch.Tensor, phone_ids: torch.Tensor,
               ar_prompt: torch.Tensor, nar_prompt: torch.Tensor, seed: int) -> np.ndarray:
    """The AR reads `ar_prompt` (speaker-prompt mode), the NAR `nar_prompt`: what ar_voice does."""
    request = TTSRequest(text_ids, nar_prompt, phone_ids=phone_ids, ar_prompt_codes=ar_prompt)
    out = generate(synth.model, [request], sampling, torch.Generator().manual_seed(seed))
    codes = out.codes[0, :, : int(out.frame_lengths[0])]
    return synth.codec.decode(codes[None].long())[0, 0].float().numpy()


def summary(lines: list[dict]) -> None:
    def show(label: str, picks: list[dict]) -> None:
        wer = 100 * sum(p["errors"] for p in picks) / sum(p["words"] for p in picks)
        print(f"{label:24s} WER {wer:5.1f} %  DNSMOS {np.mean([p['dnsmos'] for p in picks]):.2f}  "
              f"SIM {np.mean([p['sim'] for p in picks]):.3f}")

    for row in lines[0]["rows"]:
        show(row, [line["rows"][row] for line in lines])
    show("nearest house voice", [line["rows"][line["nearest"]] for line in lines])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--limit", type=int, default=44)
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=1234, help="clip i uses seed + i")
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one per clip")
    args = p.parse_args()
    synth = Synthesizer.from_pretrained(args.checkpoint, temperature=args.temperature)
    if synth.house_voices is None:
        raise SystemExit(f"{args.checkpoint} has no house voices (scripts/make_house_voices.py)")
    positions = synth.model.config.max_position_embeddings
    sampling = synth.defaults.sampling(synth.codec.frame_rate, positions // 2, 512)
    asr, dnsmos, speaker = WhisperASR(ASRConfig()), DNSMOS(), SpeakerEncoder()
    rate, q = synth.sample_rate, synth.model.config.num_codebooks
    lines = []
    with open(args.out, "w") as fh:
        for i, (batch, request, _) in enumerate(clips(synth, args.shards, args.limit, 12.0)):
            prompt = request.prompt_codes[:q]
            with torch.inference_mode():
                prompt_wav = synth.codec.decode(prompt[None].long())[0, 0].float().numpy()
                prompt_emb = speaker.embed(prompt_wav, rate)
                ar_prompts = {"own": prompt, **{v.name: v.codes for v in synth.house_voices.voices}}
                line = {"key": batch.keys[0], "rows": {},
                        "nearest": max(synth.house_voices.voices,
                                       key=lambda v: cosine(v.embedding.numpy(), prompt_emb)).name}
                for name, ar_prompt in ar_prompts.items():
                    wav = synthesize(synth, sampling, request.text_ids, request.phone_ids, ar_prompt, prompt,
                                     args.seed + i)
                    _, err = asr.score(wav, rate, batch.texts[0])
                    line["rows"][name] = {"errors": err.errors, "words": err.ref_words,
                                          "dnsmos": dnsmos(wav, rate)["ovrl"],
                                          "sim": cosine(speaker.embed(wav, rate), prompt_emb)}
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            lines.append(line)
            print(f"clip {i}: {line['key']} nearest {line['nearest']}", flush=True)
    summary(lines)


if __name__ == "__main__":
    main()
