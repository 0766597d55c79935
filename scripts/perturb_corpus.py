#!/usr/bin/env python
"""Perturbed copies of a TTS corpus as new voices: speed (data_pipeline/corpus/speed_perturb.py) or
recording channel (data_pipeline/corpus/channel_perturb.py).

    python scripts/perturb_corpus.py --input data/tts_corpus/synth --out data/tts_corpus_sp/synth_sp
    python scripts/perturb_corpus.py --kind channel --input data/tts_corpus/synth \
        --out data/tts_corpus_ch/synth_ch
    python scripts/ingest.py --input data/tts_corpus_sp --output data/tts_raw_sp --shard-max-count 250
    python scripts/tokenize_shards.py --input data/tts_raw_sp --output data/tts_tokens_sp --codec ...

Every clip gets one copy (rerunning keeps the clips already written). speed: at a factor drawn from
--factors by a hash of its name, speaker `{speaker}_sp{factor}`, its exact phone timings scaled. channel:
through one of --channels fixed channels per speaker (EQ, reverb, noise, level), speaker `{speaker}_ch{k}`,
its timings unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from data_pipeline.corpus.channel_perturb import channel_corpus_dir
from data_pipeline.corpus.speed_perturb import DEFAULT_FACTORS, perturb_corpus_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True, help="corpus folder with transcripts.tsv")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--kind", choices=("speed", "channel"), default="speed")
    p.add_argument("--factors", type=float, nargs="+", default=list(DEFAULT_FACTORS), help="speed factors")
    p.add_argument("--channels", type=int, default=5, help="channels per source speaker (--kind channel)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if any(not 0.5 <= f <= 2.0 for f in args.factors):
        p.error(f"--factors must lie in [0.5, 2.0], got {args.factors}")
    if args.channels < 1:
        p.error(f"--channels must be >= 1, got {args.channels}")
    bar = lambda rows: tqdm(rows, desc=f"perturb ({args.kind})", unit="clip")  # noqa: E731
    try:
        if args.kind == "speed":
            clips = perturb_corpus_dir(args.input, args.out, tuple(args.factors), args.seed, progress=bar)
        else:
            clips = channel_corpus_dir(args.input, args.out, args.channels, args.seed, progress=bar)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    speakers = len({c.speaker for c in clips})
    print(f"{len(clips)} clips, {speakers} perturbed voices in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
