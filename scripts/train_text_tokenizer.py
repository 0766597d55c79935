#!/usr/bin/env python
"""Train the sentencepiece text tokenizer (byte fallback) on corpus transcripts.

Examples:
  python scripts/train_text_tokenizer.py --input data/raw/lj --output data/text.model --vocab-size 2048
  python scripts/train_text_tokenizer.py --input tests/data/speech/ljspeech-sample/transcripts.tsv \\
      --output /tmp/text.model --vocab-size 512

--input: a folder of raw or token shards (every *.tar below it; only the {key}.json records are read), one
shard, a manifest (.tsv/.csv/.jsonl/.json with a transcript column) or a text file with one transcript a line.
Transcripts are normalised with data_pipeline.text.normalize.normalize_text first (unless --no-normalize), the
same way TextTokenizer.encode does. A vocab size too large for a small corpus is lowered with a warning.
"""

from __future__ import annotations

import argparse
import logging
import sys

from data_pipeline.text.tokenizer import TextTokenizer
from data_pipeline.text.training_text import iter_transcripts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="shard folder, shard, manifest or text file")
    p.add_argument("--output", required=True, help="output model path (.model is appended if missing)")
    p.add_argument(
        "--vocab-size", type=int, default=4096, help="pieces, incl. 256 bytes + <unk> (%(default)s)"
    )
    p.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe", help="(%(default)s)")
    p.add_argument(
        "--character-coverage",
        type=float,
        default=0.9995,
        help="share of characters given their own piece; the rest fall back to bytes (%(default)s)",
    )
    p.add_argument(
        "--max-sentences", type=int, default=5_000_000, help="sample at most this many (%(default)s)"
    )
    p.add_argument("--no-normalize", action="store_true", help="train on the raw transcripts")
    p.add_argument("--frontend", default=None,
                   help="'espeak-ng:VOICE' (e.g. espeak-ng:en-us): pieces over the IPA of the text, recorded "
                        "in the model so every user of the file phonemises the same way (default: spelling)")
    p.add_argument("--threads", type=int, default=2, help="(%(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("train_text_tokenizer")
    try:
        texts = list(iter_transcripts(args.input))
        log.info("%d transcripts from %s", len(texts), args.input)
        tok = TextTokenizer.train(
            texts,
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            character_coverage=args.character_coverage,
            normalize=not args.no_normalize,
            max_sentences=args.max_sentences,
            num_threads=args.threads,
            frontend=args.frontend,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # RuntimeError: PhonemizerError
        log.error("%s", e)
        return 2
    path = tok.save(args.output)
    sample = texts[0]
    pieces = [tok.id_to_piece(i) for i in tok.encode(sample)]
    print(f"saved {path} (vocab_size {tok.vocab_size})")
    print(f"example: {sample!r}\n  -> {len(pieces)} pieces: {pieces}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
