"""Synthetic-speech planning for the codec / TTS corpus recipe (the engines themselves run in the recipe)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_pipeline.corpus.synthetic_speech import (
    ESPEAK_VARIANTS,
    FLITE_VOICES,
    TTS_SPEAKERS,
    build_synthetic_folder,
    plan_jobs,
    plan_speaker_jobs,
    read_sentences,
    trim_and_normalise,
)

SENTENCES = [f"Sentence number {i} is here." for i in range(50)]


def test_plans_are_reproducible_and_varied() -> None:
    a = plan_jobs(SENTENCES, 20, "espeak-ng", seed=0)
    assert a == plan_jobs(SENTENCES, 20, "espeak-ng", seed=0)
    assert a != plan_jobs(SENTENCES, 20, "espeak-ng", seed=1)
    assert len({j.key for j in a}) == 20 and len({j.text for j in a}) == 20  # no sentence twice
    assert len({j.voice for j in a}) > 5
    assert all(j.voice.split("+")[-1] in ESPEAK_VARIANTS or "+" not in j.voice for j in a)
    flite = plan_jobs(SENTENCES, 10, "flite", seed=0)
    assert {j.voice for j in flite} <= set(FLITE_VOICES)
    with pytest.raises(ValueError, match="unknown engine"):
        plan_jobs(SENTENCES, 1, "say", seed=0)


def test_trim_and_normalise() -> None:
    tone = torch.sin(torch.arange(8000) / 5.0) * 0.3
    wav = torch.cat([torch.zeros(16000), tone, torch.zeros(16000)])
    out = trim_and_normalise(wav, 16000, peak=0.9, margin_s=0.1)
    assert 8000 + 3200 - 4 <= out.numel() <= 8000 + 3200  # the tone plus 0.1 s of margin each side
    assert abs(float(out.abs().max()) - 0.9) < 1e-5
    assert torch.equal(trim_and_normalise(torch.zeros(100), 16000), torch.zeros(100))


def test_read_sentences_skips_malformed_lines(tmp_path) -> None:
    path = tmp_path / "s.tsv"
    path.write_text("a\tHello there.\nbroken line\nb\t \nc\tGood bye.\n")
    assert read_sentences(path) == ["Hello there.", "Good bye."]


def test_missing_engine_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="espeak-ng is not installed"):
        build_synthetic_folder(plan_jobs(SENTENCES, 1, "espeak-ng", 0), tmp_path)


def test_speaker_plan_reads_each_sentence_once_with_balanced_fixed_voices() -> None:
    jobs = plan_speaker_jobs(SENTENCES, TTS_SPEAKERS, seed=0)
    assert sorted(j.text for j in jobs) == sorted(SENTENCES)
    assert jobs == plan_speaker_jobs(SENTENCES, TTS_SPEAKERS, seed=0)
    per_speaker: dict[str, set] = {}
    for job in jobs:
        per_speaker.setdefault(job.speaker, set()).add((job.engine, job.voice, job.rate, job.pitch))
    assert len(per_speaker) == len(TTS_SPEAKERS) == len({s.name for s in TTS_SPEAKERS})
    assert all(len(settings) == 1 for settings in per_speaker.values())  # one speaker = one fixed voice
    counts = [sum(j.speaker == name for j in jobs) for name in per_speaker]
    assert max(counts) - min(counts) <= 1


def _build_tts_corpus_script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "build_tts_corpus.py"
    spec = importlib.util.spec_from_file_location("build_tts_corpus_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tts_corpus_leaves_out_evaluation_texts_and_clips(tmp_path) -> None:
    script = _build_tts_corpus_script()
    sentences = tmp_path / "s.tsv"
    sentences.write_text("A-1\tKeep this one.\nA-2\tThe Evaluation sentence!\n"
                         "LJ001-0001\tA clip we evaluate.\nA-3\tthe prompt, text.\n")
    lst = tmp_path / "eval.lst"
    lst.write_text("case|The prompt text|p.wav|the evaluation sentence\n")
    texts = script.evaluation_texts([str(lst)])
    kept, dropped = script.read_corpus_sentences(sentences, texts, {"LJ001-0001"})
    assert kept == ["Keep this one."] and dropped == 3
    repo_lists = str(Path(__file__).resolve().parents[2] / "evaluation" / "lists" / "*.lst")
    unseen = "Hereupon the Persians who had been left for the purpose at Babylon by the river side"
    assert script.text_key(unseen) in script.evaluation_texts([repo_lists])  # unseen list: never trained on


# ---- the corpus builders, killed and rerun ----------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
# Runs a script with soundfile.write wrapped: right after the KILL_AT_CLIP-th synthetic clip is written to its
# temporary name (before its sidecar and the rename), the process SIGKILLs itself: a kill at a known point.
_KILLED_AT_A_CLIP = """
import os, runpy, signal, sys, threading
import soundfile
kill_at, real, lock, written = int(os.environ["KILL_AT_CLIP"]), soundfile.write, threading.Lock(), [0]
def write(file, *args, **kwargs):
    real(file, *args, **kwargs)
    if str(file).endswith(".tmp.flac"):
        with lock:
            written[0] += 1
            if written[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
soundfile.write = write
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
_SENTENCES = ["The quick brown fox jumps over the lazy dog.", "A stitch in time saves nine.",
              "Every stage resumes after a kill.", "Rain fell on the quiet town all night.",
              "She sells sea shells by the sea shore.", "Two plus two is four.",
              "The printer ran out of paper again.", "Bring the blue book to the library."]


def _builder(name: str, cwd: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    """scripts/NAME.py on the eight sentences, run in `cwd` with relative paths (so CORPUS.md, which quotes
    the command, is the same in every directory): nothing counts as evaluation material. One worker: two
    threads that start espeak-ng at the same moment can hang in its initialisation (see the report)."""
    args = ["--out", "corpus", "--sentences", "../sentences.tsv", "--exclude-dir", "no-evaluation-clips",
            "--exclude-list", "no-evaluation-lists-*.lst", "--workers", "1"]
    if name == "build_codec_corpus":  # 2 real clips, 4 espeak-ng jobs, 3 flite jobs
        args += ["--speech-root", "../speech", "--espeak-minutes", "0.3", "--flite-minutes", "0.3"]
    script = str(ROOT / "scripts" / f"{name}.py")
    cmd = [sys.executable, script, *args] if kill_at is None else [sys.executable, "-c", _KILLED_AT_A_CLIP,
                                                                    script, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT_CLIP": str(kill_at)}
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _labels(sidecar: bytes) -> tuple[list, list, float]:
    """A clip's timing sidecar without its times: (words, phones, duration)."""
    alignment = json.loads(sidecar)
    return ([w["word"] for w in alignment["words"]], [p["phone"] for p in alignment["phones"]],
            alignment["duration"])


@pytest.mark.integration
@pytest.mark.parametrize("name,kill_at,folder", [
    ("build_tts_corpus", 4, "synth"),  # 8 clips by the fixed voices: killed while writing the 4th
    ("build_codec_corpus", 6, "synth/flite"),  # after the real clips and the espeak-ng ones: in flite's stage
])
def test_a_killed_corpus_build_rerun_gives_the_uninterrupted_corpus(tmp_path, name, kill_at, folder) -> None:
    """Every stage resumes: a build SIGKILLed halfway through writing a clip, then rerun, holds the corpus
    an uninterrupted build holds: the same files, the same transcripts.tsv manifests byte for byte, the same
    CORPUS.md (up to the lengths it quotes), the same words and phones in every clip's timing sidecar. (The
    audio itself is not compared byte for byte: flite and espeak-ng draw noise from process-wide state, so
    a clip depends on what the process synthesised before it; a clip's length moves by milliseconds.)"""
    (tmp_path / "sentences.tsv").write_text("".join(f"S-{i}\t{t}\n" for i, t in enumerate(_SENTENCES)))
    clips = ROOT / "tests" / "data" / "speech" / "cmu-arctic-sample"
    (tmp_path / "speech" / "arctic").mkdir(parents=True)
    for wav in sorted(clips.glob("*.wav"))[:2]:
        shutil.copy(wav, tmp_path / "speech" / "arctic" / wav.name)

    straight = _builder(name, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    want = _tree(tmp_path / "straight" / "corpus")
    killed = _builder(name, tmp_path / "killed", kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    out = tmp_path / "killed" / "corpus"
    assert len(list((out / folder).glob("*.tmp.flac"))) == 1  # killed halfway through writing a clip
    assert not (out / folder / "transcripts.tsv").exists() and not (out / "CORPUS.md").exists()
    done = {p: p.stat() for p in (out / folder).glob("*.flac") if not p.name.endswith(".tmp.flac")}
    assert 0 < len(done) < sum(k.startswith(f"{folder}/") and k.endswith(".align.json") for k in want)

    rerun = _builder(name, tmp_path / "killed")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # the clips finished before the kill were kept, not synthesised again
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == {
        p: (st.st_ino, st.st_mtime_ns) for p, st in done.items()}
    got = _tree(out)
    assert sorted(got) == sorted(want)  # nothing of the killed run left over, nothing missing
    manifests = [k for k in want if k.endswith("transcripts.tsv")]
    assert f"{folder}/transcripts.tsv" in manifests
    assert [k for k in manifests if got[k] != want[k]] == []
    # CORPUS.md: the same clip counts, command, exclusions; its minutes / hours move with the clips' lengths
    assert re.sub(rb"\d+\.\d+", b"#", got["CORPUS.md"]) == re.sub(rb"\d+\.\d+", b"#", want["CORPUS.md"])
    assert want[f"{folder}/transcripts.tsv"].count(b"\n") == 1 + sum(k.startswith(f"{folder}/")
                                                                    and k.endswith(".flac") for k in want)
    for key in (k for k in want if k.endswith(".align.json")):
        (words, phones, seconds), expected = _labels(got[key]), _labels(want[key])
        assert (words, phones) == expected[:2], key
        assert seconds == pytest.approx(expected[2], abs=0.05), key


_RECIPE = """
seed: 0
sentences: 6
gate: {sentences: 2, min_words: 4, max_words: 14, max_wer: 0.3}
engines:
  classic: {share: 0.5}
  kokoro:
    share: 0.5
    voices:
      - {name: kumo, timbre: {jm_kumo: 1}}
      - {name: rushed, timbre: {jf_tebukuro: 1}, speed: 2.0}
"""


@pytest.mark.integration
def test_a_recipe_gates_its_neural_voices_and_a_killed_build_finishes_on_rerun(tmp_path) -> None:
    """configs/tts_corpus.yaml's path, small: Kokoro voices read the gate sentences and are scored by the real
    Whisper tiny.en and DNSMOS; a voice read at double speed fails and its clips leave the corpus. Killed
    while writing the passing voice's corpus clips, the rerun finishes without scoring any voice again."""
    (tmp_path / "sentences.tsv").write_text("".join(f"S-{i}\t{t}\n" for i, t in enumerate(_SENTENCES + [
        "We walked along the river until the sun went down.",
        "He opened the window and listened to the birds.",
        "The children played in the garden after their lessons.",
        "My sister keeps her bicycle in the shed."])))
    work = tmp_path / "run"
    work.mkdir()
    (work / "recipe.yaml").write_text(_RECIPE)
    args = ["--config", "recipe.yaml", "--out", "corpus", "--sentences", "../sentences.tsv", "--exclude-dir",
            "none", "--exclude-list", "none-*.lst", "--workers", "1"]
    script = str(ROOT / "scripts" / "build_tts_corpus.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT_CLIP": "9", "OMP_NUM_THREADS": "1"}
    # 3 classic clips, 2 x 2 gate clips, then the corpus clips: the 9th written is the passing voice's 2nd
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_A_CLIP, script, *args], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    out = work / "corpus"
    gate = json.loads((out / "gate.json").read_text())
    assert {g["voice"]: g["wer"] <= 0.3 and g["dnsmos"] >= 3.0 for g in gate} == {
        "kokoro_kumo": True, "kokoro_rushed": False}, gate
    gate_bytes = (out / "gate.json").read_bytes()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "kokoro").glob("*.flac") if ".tmp" not in p.name}

    rerun = subprocess.run([sys.executable, script, *args], cwd=work, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "voices to score" not in rerun.stderr  # the saved scores were used
    assert (out / "gate.json").read_bytes() == gate_bytes
    assert {n: (out / "kokoro" / n).stat().st_mtime_ns for n in kept} == kept  # finished clips kept
    rows = (out / "kokoro" / "transcripts.tsv").read_text().splitlines()[1:]
    assert len(rows) == 2 + 3 and all(r.split("\t")[1] == "kokoro_kumo" for r in rows)  # gate + corpus
    files = sorted(p.name for p in (out / "kokoro").glob("*.flac"))
    assert files == sorted(r.split("\t")[0] for r in rows) and not list(out.rglob("*.tmp*"))
    rejected = sorted(p.name for p in (work / "corpus.rejected" / "kokoro_rushed").iterdir())
    assert len(rejected) == 4  # 2 gate clips, each with its exact-timing sidecar
    assert all(n.startswith("kokoro_rushed_gate") and n.endswith((".flac", ".align.json")) for n in rejected)
    assert all((out / "kokoro" / f.replace(".flac", ".align.json")).is_file() for f in files)
    provenance = [json.loads(line) for line in (out / "kokoro" / "provenance.jsonl").read_text().splitlines()]
    assert sorted(p["file"] for p in provenance) == files
    assert all(p["engine"] == "kokoro" and p["timbre"] == {"jm_kumo": 1} and "Apache-2.0" in p["licence"]
               for p in provenance)
    gate_md = (out / "GATE.md").read_text()
    assert "1 of 2 Kokoro voices pass (WER <= 30 %" in gate_md and "REJECTED: WER" in gate_md
    corpus_md = (out / "CORPUS.md").read_text()
    assert "| kokoro | 5 | 0.00 | 1 |" in corpus_md
    assert ("| flite | " in corpus_md) or ("| espeak-ng | " in corpus_md)  # the 3 classic clips
