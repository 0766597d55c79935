"""Synthetic-speech planning for the codec / TTS corpus recipe (the engines themselves run in the recipe)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from data_pipeline.synthetic_speech import (
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
