"""python runs/summarize.py DIR...: corpus WER, median / capped-mean per-utterance WER, DNSMOS, SIM, pace of
scripts/evaluate.py outputs (summary.json + utterances.csv)."""
import csv
import json
import statistics
import sys
from pathlib import Path

for d in sys.argv[1:]:
    d = Path(d)
    if not (d / "summary.json").is_file():
        continue
    s = json.loads((d / "summary.json").read_text())["system"]
    with open(d / "utterances.csv", newline="") as f:
        wers = [float(r["wer"]) for r in csv.DictReader(f) if r["wer"] not in ("", "nan")]
    median = statistics.median(wers)
    capped = statistics.mean(min(w, 1.0) for w in wers)
    print(f"{str(d):34s} WER {100 * s['wer']:6.1f}  median {100 * median:5.1f}  capped {100 * capped:5.1f}  "
          f"DNSMOS {s['dnsmos_ovrl']:.2f}  SIM {s['sim']:.3f}  pace {s['pace_ratio']:.2f} ({s['pace_within_30']}/20)")
