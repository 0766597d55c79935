#!/usr/bin/env python
"""Build a same-speaker evaluation list from folders of `transcripts.tsv` (file, speaker, transcript).

    python scripts/build_eval_list.py --speech-root tests/data/speech --out evaluation/lists/repo_speech.lst

Every utterance becomes a target; its prompt is another utterance of the same speaker (>= --min-prompt-seconds
when one exists) and its own audio is the ground truth. Paths in the list are relative to the list file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import evaluation  # noqa: F401
except ImportError:  # run from a checkout whose editable install predates the evaluation package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.cases import build_same_speaker_list, write_list  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speech-root", type=Path, required=True,
                   help="folder whose subfolders hold transcripts.tsv")
    p.add_argument("--out", type=Path, required=True, help="list file to write")
    p.add_argument("--min-prompt-seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cases = build_same_speaker_list(args.speech_root, args.min_prompt_seconds)
    if not cases:
        print(f"error: no speaker with two or more utterances under {args.speech_root}", file=sys.stderr)
        return 2
    write_list(cases, args.out)
    print(f"wrote {len(cases)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
