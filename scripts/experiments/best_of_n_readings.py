"""Every reading best of N draws, scored: does the phone error rate that picks a reading
(lm/inference/rerank.py) follow Whisper's word error rate?

    python scripts/experiments/best_of_n_readings.py --checkpoint models/default \
        --list evaluation/lists/unseen_sentences.lst --seed 1234 --candidates 4 --out runs/bon/1234.json \
        --decode pace_tolerance=0

Each case is synthesised as scripts/evaluate.py does (continuation mode with the list's prompt transcript,
seed S + i), with `candidates` N; all N readings of every piece are kept, and each gets hama's phone error
rate and Whisper tiny.en's WER against the text. Prints the mean WER (capped at 1) of a random reading, of
the one best of N kept, and of the best possible pick, and the mean within-case correlation of the two.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

import lm.inference.synthesizer as synthesizer_module
from evaluation.asr import WhisperASR
from evaluation.cases import read_list
from lm.inference.rerank import phone_error_rate
from lm.inference.synthesizer import Synthesizer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--list", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--decode", nargs="*", default=[],
                   help="key=value decode options (ar_voice=house pace_tolerance=0)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    decode = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.decode)}
    synth = Synthesizer.from_pretrained(args.checkpoint, temperature=args.temperature, **decode)
    asr = WhisperASR()
    drawn: list[tuple[list[np.ndarray], int]] = []
    keep_best = synthesizer_module.keep_best_reading

    def spy(readings, row, sample_rate, word_judge=None):  # noqa: ANN001, ANN202 - records every reading
        keep, error = keep_best(readings, row, sample_rate, word_judge)
        if any(wav is None for wav, *_ in readings):
            raise SystemExit("readings ruled out by their pace are never decoded: pass --decode "
                             "pace_tolerance=0 to score every reading")
        drawn.append(([wav for wav, *_ in readings], keep))
        return keep, error

    synthesizer_module.keep_best_reading = spy
    rows = []
    for i, case in enumerate(read_list(args.list)):
        wav, rate = sf.read(case.prompt_wav, dtype="float32")
        drawn.clear()
        synth.synthesize(case.target_text, wav, rate, prompt_text=case.prompt_text, seed=args.seed + i,
                                  candidates=args.candidates)
        if len(drawn) != 1:
            raise SystemExit(f"{case.id}: {len(drawn)} sentence pieces; this script scores one-piece cases")
        readings, kept = drawn[0]
        for k, reading in enumerate(readings):
            _, errors = asr.score(reading, synth.sample_rate, case.target_text)
            rows.append({"id": case.id, "reading": k, "kept": k == kept, "wer": errors.wer,
                         "phone_error": phone_error_rate(reading, synth.sample_rate, case.target_text)})
        print(case.id, [(round(r["phone_error"], 2), round(r["wer"], 2)) for r in rows[-len(readings):]],
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        by_case.setdefault(r["id"], []).append(r)
    capped = [[min(1.0, r["wer"]) for r in case] for case in by_case.values()]
    kept = [min(1.0, r["wer"]) for r in rows if r["kept"]]
    pairs = [([r["phone_error"] for r in case], wers)
             for case, wers in zip(by_case.values(), capped, strict=True)]
    corr = [np.corrcoef(per, wer)[0, 1] for per, wer in pairs if np.std(per) > 0 and np.std(wer) > 0]
    best = 100 * np.mean([min(c) for c in capped])
    print(f"capped WER: a random reading {100 * np.mean(capped):.1f} %, kept "
          f"{100 * statistics.mean(kept):.1f} %, best possible {best:.1f} %; "
          f"within-case correlation of phone error and WER {np.mean(corr):.2f} over {len(corr)} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
