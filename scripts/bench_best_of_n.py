#!/usr/bin/env python
"""What best of N costs: synthesis time of N readings a sentence against one reading, in the same run.

    python scripts/bench_best_of_n.py                                  # models/default, N = 1 4 8, 1 thread
    python scripts/bench_best_of_n.py --checkpoint DIR --candidates 1 2 4 --cases 3
    python scripts/bench_best_of_n.py --candidates 1 4 --judges phones phones+words   # the word judge's cost

Each case of --list (evaluation/lists/unseen_sentences.lst: a real prompt, its transcript, a sentence) is
synthesised in continuation mode, as generate.py does, with every N in turn (seed fixed per case), after one
warm-up call, and with every judge of --judges (DecodeConfig.judge; N = 1 needs none). The table gives per
N and judge: median real-time factor (seconds of compute per second of audio, on the
clock of --clock), its ratio to N = 1, and how many of the drawn readings were heard (made into audio and
scored by the phone recogniser: lm/inference/row_batches.py `readings_to_hear`; the rest were ruled out by
their pace alone), and the kept readings' mean phone error rate.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import statistics
import time
from pathlib import Path

import soundfile as sf
import torch

from evaluation.cases import read_list
from lm.inference.synthesis_types import JUDGES
from lm.inference.synthesizer import Synthesizer

ROOT = Path(__file__).resolve().parents[1]


class _HeardCounter(logging.Handler):
    """Counts the readings each best-of-N choice heard (the synthesizer logs "-" for the others)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.heard = self.drawn = 0

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"phone error rates ([^;]*);", record.getMessage())
        if found:
            errors = found.group(1).split(", ")
            self.drawn += len(errors)
            self.heard += sum(e != "-" for e in errors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--list", type=Path, default=ROOT / "evaluation" / "lists" / "unseen_sentences.lst")
    p.add_argument("--cases", type=int, default=5, help="first cases of --list")
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--judges", nargs="+", default=["phones"], choices=JUDGES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["process", "wall"], default="process",
                   help="process: CPU time of this process (a shared machine does not inflate it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    synth = Synthesizer.from_pretrained(args.checkpoint)
    counter = _HeardCounter()
    logging.getLogger("lm.inference.rerank").addHandler(counter)
    logging.getLogger("lm.inference.rerank").setLevel(logging.INFO)
    cases = read_list(args.list)[: args.cases]
    prompts = [sf.read(c.prompt_wav, dtype="float32") for c in cases]
    synth.synthesize(cases[0].target_text, *prompts[0], prompt_text=cases[0].prompt_text, seed=0)  # warm-up
    table = []
    runs = [(n, judge) for judge in args.judges for n in args.candidates if n > 1 or judge == args.judges[0]]
    for n, judge in runs:
        counter.heard = counter.drawn = 0
        rtfs, errors = [], []
        for i, (case, (wav, rate)) in enumerate(zip(cases, prompts, strict=True)):
            start = clock()
            result = synth.synthesize(case.target_text, wav, rate, prompt_text=case.prompt_text, seed=100 + i,
                                      candidates=n, judge=judge)
            rtfs.append((clock() - start) / (len(result.wav) / result.sample_rate))
            errors += [e for e in result.piece_phone_errors if math.isfinite(e)]
        heard = f"{counter.heard} of {counter.drawn}" if counter.drawn else "1 a piece"
        table.append((n, judge if n > 1 else "-", statistics.median(rtfs), heard,
                      statistics.mean(errors) if errors else math.nan))
    base = next((rtf for n, _, rtf, *_ in table if n == 1), table[0][2])
    print(f"\n{args.checkpoint}, {len(cases)} cases, {args.threads} thread(s), {args.clock} clock\n")
    print("| candidates | judge | median RTF | x of 1 reading | readings heard | kept phone error |")
    print("|---|---|---|---|---|---|")
    for n, judge, rtf, heard, error in table:
        print(f"| {n} | {judge} | {rtf:.2f} | {rtf / base:.2f} | {heard} | {error:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
