"""Aggregation arithmetic and the summary / Markdown layout, on hand-made rows (no model)."""

import math

import pytest

from evaluation.report import markdown_table, summarize, write_markdown
from evaluation.runner import UttScore


def _row(id_, system, errors, ref_words, sim=0.8, error=""):
    wer = errors / ref_words if ref_words else math.nan
    return UttScore(id_, system, "text", wer=wer, errors=errors, ref_words=ref_words, sim=sim,
                    dnsmos_ovrl=3.0, rtf=0.5 if system == "system" else math.nan, error=error)


def test_corpus_and_mean_wer_differ_as_defined():
    rows = [_row("a", "system", 1, 10), _row("b", "system", 3, 2), _row("c", "system", 0, 8)]
    s = summarize(rows, num_cases=3)["system"]
    assert s["wer"] == pytest.approx(4 / 20)  # total errors / total reference words
    assert s["wer_mean_per_utt"] == pytest.approx((0.1 + 1.5 + 0.0) / 3)
    assert s["wer_median_per_utt"] == pytest.approx(0.1)  # the looped 150 % sentence does not move it
    assert s["wer_above_50"] == 1
    assert s["sim"] == pytest.approx(0.8) and s["rtf"] == pytest.approx(0.5)
    even = summarize(rows + [_row("d", "system", 3, 10)], num_cases=4)["system"]
    assert even["wer_median_per_utt"] == pytest.approx((0.1 + 0.3) / 2)
    assert "WER median/utt %" in markdown_table(summarize(rows, num_cases=3))


def test_failed_rows_are_counted_reported_and_left_out_of_means():
    rows = [_row("a", "system", 1, 4, sim=0.6),
            UttScore("b", "system", "text", error="synthesis: boom"),
            _row("c", "system", 0, 4, sim=math.nan, error="sim: audio is silent; no speaker to embed")]
    summary = summarize(rows, num_cases=3)
    s = summary["system"]
    assert (s["n"], s["n_failed"]) == (3, 1)
    assert s["counts"]["wer"] == 2 and s["counts"]["sim"] == 1
    assert s["wer"] == pytest.approx(1 / 8) and s["sim"] == pytest.approx(0.6)
    assert s["pesq_wb"] is None  # no row had it: None, never NaN, so summary.json is valid JSON
    assert [f["id"] for f in summary["failed"]] == ["b", "c"]


def test_ground_truth_key_only_when_ground_truth_rows_exist(tmp_path):
    only_system = summarize([_row("a", "system", 0, 3)], num_cases=1)
    assert "ground_truth" not in only_system
    both = summarize([_row("a", "system", 2, 4), _row("a", "ground_truth", 0, 4)], num_cases=1)
    for key in ("system", "ground_truth"):
        assert {"wer", "wer_mean_per_utt", "wer_above_50", "sim", "dnsmos_ovrl", "rtf"} <= set(both[key])
    assert both["ground_truth"]["rtf"] is None
    table = markdown_table(both)
    assert "| system | 1 | 50.00 | 50.00 | 50.00 | 0 | 0.800 |" in table
    assert "PESQ" not in table  # empty columns are dropped
    both["config"] = {"list": "x.lst", "mode": "synthesis", "seed": 7, "checkpoint": "ck",
                      "decode_config": {"temperature": 0.8}}
    write_markdown(both, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "seed: 7" in text and "'temperature': 0.8" in text and table in text
