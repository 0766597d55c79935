#!/usr/bin/env python
"""Where intelligibility gets lost: the same clips through the codec, the NAR, the AR with given durations
and the full AR, each scored by Whisper against the transcript.

    python scripts/diagnose_stages.py --checkpoint runs/lm_default/export \
        --shards data/tokens/tokens-000015.tar --limit 10 --out runs/diag_stages

Every row uses the clips of --shards (token shards with phone alignments), each prompted (speaker-prompt
mode) by another utterance of its speaker as the training loader pairs them (a crop of the clip itself when
the shards hold no other; the report counts those):

    codec     the clip's own codes, first Q codebooks, through the codec decoder: the ceiling of every row
    nar       the clip's codebook 1 and frame phones; the NAR fills codebooks 2..Q
    ar_tf     the AR teacher-forced on the clip (its codes so far, its phones): each frame's most likely
              codebook-1 code, then the NAR. Far below `ar_given`: the AR's own samples drift (exposure)
    ar_given  the AR walking the clip's phones for the clip's own durations, then the NAR
    ar        the AR walking the phones with its advance head, then the NAR: what synthesis does

A big step between two rows names the stage to work on. Writes OUT/report.md, OUT/rows.csv and the wavs.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from data_pipeline.records import TTSBatch
from evaluation.asr import ASRConfig, WhisperASR
from lm.inference.generate import TTSRequest, generate
from lm.inference.nar_pass import generate_nar
from lm.inference.sampling import SamplingConfig
from lm.inference.synthesizer import Synthesizer
from lm.model.batch import build_lm_batch
from lm.model.vocab import IGNORE_INDEX

log = logging.getLogger("diagnose_stages")
ROWS = ("codec", "nar", "ar_tf", "ar_given", "ar")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="export directory of a phone-aligned model")
    p.add_argument("--shards", required=True, nargs="+", help="token shards (files, folders or globs)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--limit", type=int, default=10, help="clips to score")
    p.add_argument("--temperature", type=float, default=None, help="AR temperature (default: the model's)")
    p.add_argument("--seed", type=int, default=1234, help="clip i uses seed + i")
    p.add_argument("--max-seconds", type=float, default=12.0, help="skip longer clips")
    return p.parse_args(argv)


def clips(synth: Synthesizer, shards: list[str], limit: int, max_seconds: float):
    """(key, transcript, request with the clip's phones and durations, its codes [Q, F]) for `limit` clips."""
    from data_pipeline.loading.loader import build_loader

    q = synth.model.config.num_codebooks
    loader = build_loader(shards if len(shards) > 1 else shards[0], synth.tokenizer.encode, infinite=False,
                          shuffle_shards=False, shuffle_buffer=0, num_codebooks=q, max_batch_size=1,
                          max_frames=100_000, max_seconds=max_seconds, rank=0, world_size=1)
    n = 0
    for batch in loader:
        batch: TTSBatch
        if batch.phone_ids is None or int(batch.phone_lengths[0]) == 0:
            continue
        p = int(batch.phone_lengths[0])
        request = TTSRequest(
            text_ids=batch.text_ids[0, : batch.text_lengths[0]],
            prompt_codes=batch.prompt_codes[0, :, : batch.prompt_lengths[0]],
            phone_ids=batch.phone_ids[0, :p], phone_durations=batch.phone_durations[0, :p])
        crop = bool(batch.prompt_is_crop[0]) if batch.prompt_is_crop is not None else False
        yield batch, request, crop
        n += 1
        if n >= limit:
            return


def teacher_forced_codebook1(synth: Synthesizer, batch: TTSBatch) -> torch.Tensor:
    """[F] each frame's most likely codebook-1 code given the clip's own earlier codes and its phones
    (speaker-prompt layout, as in training)."""
    model, f = synth.model, int(batch.frame_lengths[0])
    lm = build_lm_batch(batch, model.vocab, model.config.num_codebooks, model.config.max_position_embeddings,
                        continuation_prob=0.0, phone_aligned=True)
    logits = model(lm).ar_logits[0]  # [S, classes]
    targets = (lm.labels[0] != IGNORE_INDEX).nonzero().flatten()[:f]  # the frames (the last label is <eos>)
    return logits[targets, : model.config.codebook_size].argmax(-1)


def stage_codes(synth: Synthesizer, batch: TTSBatch, request: TTSRequest, sampling: SamplingConfig,
                seed: int) -> dict[str, torch.Tensor]:
    """Every row's codes [Q, F] for one clip."""
    model = synth.model
    f = int(batch.frame_lengths[0])
    codes, frame_phones = batch.codes[0, :, :f], batch.frame_phones[0, :f]
    out = {"codec": codes}
    prompt = request.prompt_codes[: model.config.num_codebooks]

    def nar(first: torch.Tensor) -> torch.Tensor:
        return generate_nar(
            model, request.text_ids[None], torch.tensor([request.text_ids.numel()]), prompt[None],
            torch.tensor([prompt.shape[1]]), first[None], torch.tensor([f]),
            frame_phones=frame_phones[None])[0]

    out["nar"] = nar(codes[0])
    out["ar_tf"] = nar(teacher_forced_codebook1(synth, batch))
    for name, durations in (("ar_given", request.phone_durations), ("ar", None)):
        req = TTSRequest(request.text_ids, request.prompt_codes, phone_ids=request.phone_ids,
                         phone_durations=durations)
        res = generate(model, [req], sampling, torch.Generator().manual_seed(seed))
        out[name] = res.codes[0, :, : int(res.frame_lengths[0])]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    synth = Synthesizer.from_pretrained(args.checkpoint)
    if synth.model.config.alignment != "phoneme":
        raise SystemExit(f"{args.checkpoint}: not a phone-aligned model (model.alignment is "
                         f"{synth.model.config.alignment!r}); the rows need phones")
    decode = synth.defaults if args.temperature is None else synth.defaults.updated(
        {"temperature": args.temperature})
    sampling = decode.sampling(synth.codec.frame_rate, synth.model.config.max_position_embeddings // 2, 512)
    asr = WhisperASR(ASRConfig())
    (args.out / "wavs").mkdir(parents=True, exist_ok=True)
    errors = {r: 0 for r in ROWS}
    words, crops, table = 0, 0, []
    found = clips(synth, args.shards, args.limit, args.max_seconds)
    for i, (batch, request, crop) in enumerate(tqdm(found, total=args.limit, desc="clips")):
        crops += crop
        key, text = batch.keys[0], batch.texts[0]
        with torch.inference_mode():
            rows = stage_codes(synth, batch, request, sampling, args.seed + i)
        line = {"key": key, "text": text, "prompt_is_crop": crop}
        for name, c in rows.items():
            with torch.inference_mode():
                wav = synth.codec.decode(c[None].to(torch.long))[0, 0].float().cpu().numpy()
            sf.write(args.out / "wavs" / f"{key}.{name}.wav", wav, synth.codec.sample_rate)
            hyp, err = asr.score(wav, synth.codec.sample_rate, text)
            errors[name] += err.errors
            line[f"{name}_wer"], line[f"{name}_hyp"] = round(err.wer, 4), hyp
            line[f"{name}_seconds"] = round(c.shape[1] / synth.codec.frame_rate, 2)
        words += err.ref_words
        table.append(line)
    if not table:
        raise SystemExit(f"no clip with phone alignments in {args.shards}")
    with open(args.out / "rows.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    report = [f"# Stage diagnosis: `{args.checkpoint}`", "",
              f"{len(table)} clips of {', '.join(args.shards)} ({words} words), AR temperature "
              f"{decode.temperature}, seeds {args.seed}+i; {crops} prompt(s) cropped from the clip itself.",
              "",
              "| row | what makes the codes | WER % |", "|---|---|---|"]
    what = {"codec": "the clip's own codes", "nar": "clip's codebook 1 + NAR",
            "ar_tf": "AR teacher-forced, most likely code per frame + NAR",
            "ar_given": "AR with the clip's durations + NAR", "ar": "AR with its advance head + NAR"}
    for name in ROWS:
        report.append(f"| {name} | {what[name]} | {100 * errors[name] / max(words, 1):.1f} |")
    (args.out / "report.md").write_text("\n".join(report) + "\n", encoding="utf-8")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
