"""scripts/summarize_evals.py: one looped transcript (933 % WER) moves the corpus WER, not the capped
mean; the median is the evaluator's; bad input names the file."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from summarize_evals import summarize  # noqa: E402


def write_eval(d: Path, wers: list[float]) -> Path:
    d.mkdir(parents=True)
    system = {"wer": 1.5, "wer_median_per_utt": statistics.median(wers) if wers else None, "dnsmos_ovrl": 2.4,
              "sim": 0.56, "pace_ratio": 0.9, "pace_within_30": 19}  # as evaluation/report.py writes it
    (d / "summary.json").write_text(json.dumps({"system": system}))
    with open(d / "utterances.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "wer"])
        writer.writeheader()
        writer.writerows({"id": f"u{i}", "wer": w} for i, w in enumerate(wers))
    return d


def test_the_median_and_capped_mean_ignore_one_loop(tmp_path: Path) -> None:
    s = summarize(write_eval(tmp_path / "a", [0.2, 0.4, 0.6, 9.33]))
    assert s["median"] == pytest.approx(0.5)
    assert s["capped"] == pytest.approx((0.2 + 0.4 + 0.6 + 1.0) / 4)
    assert s["wer"] == 1.5 and s["within_30"] == 19
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize_evals.py"), str(tmp_path / "a")],
                         capture_output=True, text=True, check=True).stdout
    assert "median  50.0" in out and "capped  55.0" in out


def test_an_evaluation_without_scores_is_named(tmp_path: Path) -> None:
    d = write_eval(tmp_path / "b", [])
    with pytest.raises(ValueError, match=r"b/utterances.csv: no scored utterances"):
        summarize(d)
