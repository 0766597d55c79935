"""Synthetic-speech planning for the codec / TTS corpus recipe (the engines themselves run in the recipe)."""

from __future__ import annotations

import shutil

import pytest
import torch

from data_pipeline.synthetic_speech import (
    ESPEAK_VARIANTS,
    FLITE_VOICES,
    build_synthetic_folder,
    plan_jobs,
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
