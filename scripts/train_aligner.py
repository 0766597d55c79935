#!/usr/bin/env python
"""Train the forced aligner's frame classifier on exactly timed synthetic speech; write models/aligner.

    python scripts/train_aligner.py --work runs/aligner --out models/aligner

Stages (each kept when done, so a rerun resumes): synthesise + featurise the training and held-out sets
(data_pipeline/alignment/synthetic_set.py), train (checkpoint every epoch), write the model directory
(config.json + model.safetensors), then measure it on the held-out voices (scripts/bench_align.py does the
same with timing). Sentences: the public-domain sentence file minus every evaluation text.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_pipeline.alignment.synthetic_set import (  # noqa: E402
    HELDOUT_VOICES,
    TRAIN_VOICES,
    build_set,
    plan,
    split_sentences,
)
from data_pipeline.alignment.training import TrainConfig, train_classifier  # noqa: E402
from scripts.build_tts_corpus import evaluation_texts, read_corpus_sentences  # noqa: E402

log = logging.getLogger("train_aligner")


def corpus_sentences(path: Path) -> list[str]:
    excluded = evaluation_texts([str(ROOT / "evaluation" / "lists" / "*.lst")])
    sentences, _ = read_corpus_sentences(path, excluded, set())
    return sentences


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "aligner")
    p.add_argument("--out", type=Path, default=ROOT / "models" / "aligner")
    p.add_argument("--sentences", type=Path,
                   default=ROOT.parent / "shared" / "text" / "ljspeech_sentences.tsv")
    p.add_argument("--train-clips", type=int, default=1600)
    p.add_argument("--heldout-clips", type=int, default=240)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-only", action="store_true", help="stop after building the sets")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "heldout" in args.sentences.parts:
        p.error("--sentences must not come from a held-out folder")

    train_text, heldout_text = split_sentences(corpus_sentences(args.sentences))
    n_train = build_set(plan(train_text, TRAIN_VOICES, args.train_clips, seed=0), args.work / "train",
                        args.workers)
    n_held = build_set(plan(heldout_text, HELDOUT_VOICES, args.heldout_clips, seed=1),
                       args.work / "heldout", args.workers)
    log.info("sets: %d training clips, %d held-out clips", n_train, n_held)
    if args.data_only:
        return 0
    train_classifier(args.work / "train", args.work / "heldout", args.work / "ckpt", args.out,
                     TrainConfig(epochs=args.epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
