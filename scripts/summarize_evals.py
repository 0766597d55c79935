#!/usr/bin/env python
"""One line per `scripts/evaluate.py` output directory: corpus WER, median and capped-at-100 % mean of the
per-utterance WER, DNSMOS OVRL, SIM, pace. On 20 sentences one garbled clip that Whisper loops on moves the
corpus WER by 20-50 points; the median and the capped mean do not move with it, so A/Bs are read on all three.

    python scripts/summarize_evals.py runs/ab_round4/eval_*
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path


def summarize(eval_dir: Path) -> dict[str, float]:
    """-> wer, median, capped (fractions), dnsmos, sim, pace, within_30 of one evaluation directory."""
    system = json.loads((eval_dir / "summary.json").read_text())["system"]
    with open(eval_dir / "utterances.csv", newline="") as f:
        wers = [float(row["wer"]) for row in csv.DictReader(f) if row["wer"] not in ("", "nan")]
    if not wers:
        raise ValueError(f"{eval_dir / 'utterances.csv'}: no scored utterances")
    return {"wer": system["wer"], "median": system.get("wer_median_per_utt", float("nan")),
            "capped": statistics.mean(min(w, 1.0) for w in wers), "dnsmos": system["dnsmos_ovrl"],
            "sim": system["sim"], "pace": system["pace_ratio"], "within_30": system["pace_within_30"]}


def main(argv: list[str]) -> int:
    dirs = [Path(a) for a in argv if (Path(a) / "summary.json").is_file()]
    if not dirs:
        print("usage: summarize_evals.py EVAL_DIR... (written by scripts/evaluate.py)", file=sys.stderr)
        return 2
    for d in dirs:
        s = summarize(d)
        print(f"{str(d):34s} WER {100 * s['wer']:6.1f}  median {100 * s['median']:5.1f}  "
              f"capped {100 * s['capped']:5.1f}  DNSMOS {s['dnsmos']:.2f}  SIM {s['sim']:.3f}  "
              f"pace {s['pace']:.2f} ({s['within_30']} within 30 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
