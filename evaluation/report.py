"""Aggregate per-utterance scores into summary.json and a Markdown table.

WER is reported three ways: corpus WER (total word errors / total reference words), the mean of
per-utterance WER (seed-tts-eval's convention) and its median (a babbled stretch that makes Whisper loop can
score 900 % on one sentence and move the other two by tens of points on a short list; the median does not),
plus the number of utterances above 50 % WER, which counts
hallucinated or babbled outputs. All WERs are fractions. A metric that could not be computed for a row is left
out of its mean, and `counts` says how many rows each mean covers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.pace import within_tolerance

MEAN_METRICS = ("sim", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "pesq_wb", "stoi", "rtf",
                "first_audio_s", "duration_s", "pace_ratio")
HALLUCINATION_WER = 0.5


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _mean(values) -> float | None:
    vals = _finite(values)
    return sum(vals) / len(vals) if vals else None


def _median(values) -> float | None:
    vals = _finite(values)
    return statistics.median(vals) if vals else None


def summarize_group(rows: Sequence[Any]) -> dict:
    """rows: UttScore-like objects of one system -> metric dict (None where nothing could be scored)."""
    scored = [r for r in rows if math.isfinite(r.wer)]
    ref_words = sum(r.ref_words for r in scored)
    out: dict[str, Any] = {
        "n": len(rows),
        "n_failed": sum(1 for r in rows if r.error.startswith(("input:", "synthesis:"))),
        "wer": (sum(r.errors for r in scored) / ref_words) if ref_words else None,
        "wer_mean_per_utt": _mean(r.wer for r in scored),
        "wer_median_per_utt": _median(r.wer for r in scored),
        "wer_above_50": sum(1 for r in scored if r.wer > HALLUCINATION_WER),
        # utterances read within +-30 % of the prompt speaker's pace (None when no row had a pace)
        "pace_within_30": (sum(1 for r in rows if within_tolerance(r.pace_ratio))
                           if any(math.isfinite(r.pace_ratio) for r in rows) else None),
    }
    for name in MEAN_METRICS:
        out[name] = _mean(getattr(r, name) for r in rows)
    counts = {n: len(_finite(getattr(r, n) for r in rows)) for n in MEAN_METRICS}
    out["counts"] = {"wer": len(scored), **counts}
    return out


def summarize(rows: Sequence[Any], num_cases: int) -> dict:
    """Top-level keys: `system`, `ground_truth` (only when the list had ground-truth audio), `num_cases`,
    `failed` (rows with any error, with the reason)."""
    summary: dict[str, Any] = {"num_cases": num_cases}
    for system in ("system", "ground_truth"):
        group = [r for r in rows if r.system == system]
        if group:
            summary[system] = summarize_group(group)
    summary["failed"] = [{"id": r.id, "system": r.system, "error": r.error} for r in rows if r.error]
    return summary


COLUMNS = [  # (key, header, format)
    ("n", "n", "{:d}"),
    ("wer", "WER %", "pct"),
    ("wer_mean_per_utt", "WER mean/utt %", "pct"),
    ("wer_median_per_utt", "WER median/utt %", "pct"),
    ("wer_above_50", "WER>50%", "{:d}"),
    ("sim", "SIM", "{:.3f}"),
    ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"),
    ("dnsmos_sig", "SIG", "{:.2f}"),
    ("dnsmos_bak", "BAK", "{:.2f}"),
    ("pesq_wb", "PESQ-WB", "{:.2f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("rtf", "RTF", "{:.3f}"),
    ("first_audio_s", "first audio s", "{:.2f}"),
    ("pace_ratio", "pace", "{:.2f}"),
    ("pace_within_30", "pace ±30%", "{:d}"),
]


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if fmt == "pct":
        return f"{100 * value:.2f}"
    return fmt.format(value)


def markdown_table(summary: dict) -> str:
    systems = [s for s in ("system", "ground_truth") if s in summary]
    # Drop columns empty for every row (PESQ/STOI outside codec-only, first audio for a codec).
    cols = [c for c in COLUMNS if any(summary[s].get(c[0]) is not None for s in systems)]
    lines = ["| | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s in systems:
        lines.append(f"| {s} | " + " | ".join(_cell(summary[s].get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines)


def write_markdown(summary: dict, path: str | Path) -> None:
    cfg = summary.get("config", {})
    parts = ["# Evaluation report", ""]
    parts += [f"- list: `{cfg.get('list')}` ({summary['num_cases']} cases), mode: {cfg.get('mode')}",
              f"- seed: {cfg.get('seed')} ({cfg.get('seed_rule', '')})"]
    if "checkpoint" in cfg:
        parts.append(f"- checkpoint: `{cfg['checkpoint']}`")
        if cfg.get("adapter"):
            parts.append(f"- LoRA adapter: `{cfg['adapter']}`")
        parts.append(f"- decode config: `{cfg.get('decode_config')}`")
    if "codec" in cfg:
        parts.append(f"- codec: `{cfg['codec']}`")
    asr = cfg.get("metrics", {}).get("asr", {})
    if asr:
        parts.append(f"- ASR: `{asr.get('model')}` (beam {asr.get('beam_size')}, {asr.get('compute_type')})")
    parts += ["", markdown_table(summary), "",
              "WER as a percentage: corpus (errors / reference words), mean and median of per-utterance WER; "
              "WER>50% counts utterances above 50 % WER. SIM: resemblyzer cosine to the prompt audio. "
              "pace: seconds per phone against the prompt's own (1 = the prompt speaker's pace); "
              "pace ±30%: utterances within 30 % of it. "
              "Ground-truth rows score the real recordings the same way."]
    failed = summary.get("failed", [])
    if failed:
        parts += ["", f"## Problems ({len(failed)})", ""]
        parts += [f"- {f['id']} [{f['system']}]: {f['error']}" for f in failed]
    Path(path).write_text("\n".join(parts) + "\n", encoding="utf-8")
