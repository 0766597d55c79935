"""Build the TTS corpus a recipe describes: classic voices, the neural-voice gate, the neural voices.

Stages, each resumable (clips on disk are kept, gate scores are saved after every voice):
1. the classic voices (flite + espeak-ng) read their sentences into `<out>/synth/`;
2. every Kokoro candidate reads the gate sentences into `<out>/kokoro/` and is scored by the `scorer`
   (evaluation.voice_gate.VoiceScorer: Whisper WER + DNSMOS); a rejected voice's clips move to
   `<out>.rejected/<voice>/`, outside the corpus, so ingest never sees them;
3. the voices that passed read Kokoro's sentences, in turn; their gate clips stay in the corpus.
`CORPUS.md` and `GATE.md` report what was built.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from data_pipeline.corpus.corpus_recipe import (
    CorpusRecipe,
    gate_jobs,
    kokoro_corpus_jobs,
    load_recipe,
    plan_corpus,
)
from data_pipeline.corpus.synthetic_speech import (
    ENGINE_LICENCES,
    TTS_SPEAKERS,
    SynthJob,
    build_synthetic_folder,
)

log = logging.getLogger(__name__)


class VoiceScorerLike(Protocol):
    def score(
        self, voice: str, clips: list[tuple[Path, str]], max_wer: float, min_dnsmos: float, description: dict
    ) -> Any: ...  # has .passed, .wer, .dnsmos, .reasons()

    def load(self, path: Path) -> dict[str, Any]: ...

    def save(self, results: dict[str, Any], path: Path) -> None: ...

    def table(self, results: list[Any]) -> str: ...


def _set_aside(folder: Path, keys: Sequence[str], to: Path) -> int:
    moved = 0
    for key in keys:
        for path in (folder / f"{key}.flac", folder / f"{key}.align.json"):
            if path.is_file():
                to.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), to / path.name)
                moved += 1
    return moved


def _keep_provenance_of_present_clips(folder: Path) -> list[dict]:
    """Rewrite provenance.jsonl with one line per clip now in the folder; return those lines."""
    path = folder / "provenance.jsonl"
    if not path.is_file():
        return []
    lines: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if (folder / row.get("file", "")).is_file():
            lines[row["file"]] = row
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines.values()), encoding="utf-8")
    tmp.rename(path)
    return list(lines.values())


def run_gate(
    recipe: CorpusRecipe,
    gate_sentences: list[str],
    kokoro_dir: Path,
    rejected_dir: Path,
    sample_rate: int,
    workers: int,
    scorer: VoiceScorerLike,
) -> dict[str, Any]:
    """Score every candidate voice not scored yet; returns all scores (voice name -> result)."""
    results_path = kokoro_dir.parent / "gate.json"
    results = scorer.load(results_path)
    todo = [v for v in recipe.kokoro_voices if v.name not in results]
    if todo:
        log.info(
            "gate: %d voices to score on %d sentences (%d scored earlier)",
            len(todo),
            len(gate_sentences),
            len(results),
        )
        build_synthetic_folder(
            [j for v in todo for j in gate_jobs(v, gate_sentences)], kokoro_dir, sample_rate, workers
        )
    for i, voice in enumerate(todo, start=1):
        jobs = gate_jobs(voice, gate_sentences)
        clips = [
            (kokoro_dir / f"{j.key}.flac", j.text) for j in jobs if (kokoro_dir / f"{j.key}.flac").is_file()
        ]
        result = scorer.score(
            voice.name, clips, recipe.gate.max_wer, recipe.gate.min_dnsmos, voice.describe()
        )
        results[voice.name] = result
        scorer.save(results, results_path)
        log.info(
            "gate %d/%d %s: WER %.1f %%, DNSMOS %.2f -> %s",
            i,
            len(todo),
            voice.name,
            100 * result.wer,
            result.dnsmos,
            "pass" if result.passed else "REJECTED (" + result.reasons() + ")",
        )
    for voice in recipe.kokoro_voices:
        if not results[voice.name].passed:
            _set_aside(
                kokoro_dir, [j.key for j in gate_jobs(voice, gate_sentences)], rejected_dir / voice.name
            )
    return results


def _engine_rows(provenance: list[dict]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for r in provenance:
        row = rows.setdefault(
            r["engine"], {"clips": 0, "seconds": 0.0, "speakers": set(), "timed_s": 0.0, "cpu_s": 0.0}
        )
        row["clips"] += 1
        row["seconds"] += r["seconds"]
        row["speakers"].add(r["speaker"])
        if r.get("cpu_seconds"):
            row["timed_s"] += r["seconds"]
            row["cpu_s"] += r["cpu_seconds"]
    return rows


def build_from_recipe(
    config: Path,
    sentences: list[str],
    dropped: int,
    out: Path,
    sample_rate: int,
    workers: int,
    command: str,
    scorer: VoiceScorerLike,
) -> int:
    recipe = load_recipe(config)
    plan = plan_corpus(sentences, recipe)
    out.mkdir(parents=True, exist_ok=True)
    rejected_dir = out.with_name(out.name + ".rejected")
    provenance: list[dict] = []
    if plan.classic:
        build_synthetic_folder(plan.classic, out / "synth", sample_rate, workers)
        provenance += _keep_provenance_of_present_clips(out / "synth")
    results: dict[str, Any] = {}
    if recipe.kokoro_voices:
        kokoro_dir = out / "kokoro"
        results = run_gate(
            recipe, plan.gate_sentences, kokoro_dir, rejected_dir, sample_rate, workers, scorer
        )
        passed = [v for v in recipe.kokoro_voices if results[v.name].passed]
        jobs: list[SynthJob] = [j for v in passed for j in gate_jobs(v, plan.gate_sentences)]
        jobs += kokoro_corpus_jobs(passed, plan.kokoro_sentences)
        planned = {j.key for j in jobs}
        stale = [p.stem for p in kokoro_dir.glob("*.flac") if p.stem not in planned and ".tmp" not in p.name]
        if stale:  # clips of an earlier plan (another pass set): out of the corpus, kept for inspection
            log.warning(
                "%d Kokoro clips are not in this plan; moved to %s", len(stale), rejected_dir / "stale"
            )
            _set_aside(kokoro_dir, stale, rejected_dir / "stale")
        if jobs:
            build_synthetic_folder(jobs, kokoro_dir, sample_rate, workers)
        provenance += _keep_provenance_of_present_clips(kokoro_dir)
        (out / "GATE.md").write_text(
            f"# Voice gate\n\n{len(passed)} of {len(recipe.kokoro_voices)} Kokoro voices pass (WER <= "
            f"{100 * recipe.gate.max_wer:.0f} %, DNSMOS OVRL >= {recipe.gate.min_dnsmos}) on the same "
            f"{len(plan.gate_sentences)} sentences; Whisper tiny.en, beam 5.\n\n"
            + scorer.table(list(results.values()))
            + "\n"
        )
    _write_report(out, recipe, provenance, results, dropped, command)
    return 0


def _write_report(
    out: Path,
    recipe: CorpusRecipe,
    provenance: list[dict],
    results: dict[str, Any],
    dropped: int,
    command: str,
) -> None:
    rows = _engine_rows(provenance)
    total = sum(r["seconds"] for r in rows.values())
    neural = rows.get("kokoro", {}).get("seconds", 0.0)
    table = [
        "| engine | clips | hours | speakers | audio s per CPU s (measured on) | licence |",
        "|---|---|---|---|---|---|",
    ]
    for engine, r in sorted(rows.items()):
        speed = f"{r['timed_s'] / r['cpu_s']:.2f} ({r['timed_s'] / 60:.0f} min)" if r["cpu_s"] else "-"
        table.append(
            f"| {engine} | {r['clips']} | {r['seconds'] / 3600:.2f} | {len(r['speakers'])} | {speed} | "
            f"{ENGINE_LICENCES[engine]} |"
        )
    passed = sum(1 for r in results.values() if r.passed)
    lines = [
        "# TTS training corpus",
        "",
        f"Built by `python scripts/build_tts_corpus.py {command}`.",
        "",
        f"{sum(r['clips'] for r in rows.values())} clips, {total / 3600:.2f} hours, "
        f"{100 * neural / max(total, 1e-9):.0f} % neural voices by duration; {passed} Kokoro voices passed "
        f"the gate (GATE.md), {len(TTS_SPEAKERS)} classic voices.",
        "",
        *table,
        "",
        f"Left out: {dropped} sentences that are evaluation material (texts of evaluation/lists/*.lst and "
        "the sentences of the clips under tests/data/speech).",
        "",
        "Every clip's engine, voice or mix, speed and licence: `*/provenance.jsonl`. Sentences: LJ Speech "
        "transcripts, public domain.",
        "",
    ]
    (out / "CORPUS.md").write_text("\n".join(lines))
    print(
        f"corpus in {out}: {sum(r['clips'] for r in rows.values())} clips, {total / 3600:.2f} h, "
        f"{100 * neural / max(total, 1e-9):.0f} % neural; {passed}/{len(results)} neural voices passed"
    )
