"""The TTS corpus recipe: the committed config, the sentence split, clear errors for bad recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_pipeline.corpus.corpus_recipe import (
    RecipeError,
    gate_jobs,
    kokoro_corpus_jobs,
    load_recipe,
    plan_corpus,
)
from data_pipeline.corpus.synthetic_speech import TTS_SPEAKERS, plan_speaker_jobs

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    f"Sentence {'one two three four five six seven'[: 6 + i % 20]} end."
    if i % 3
    else f"A short line number {i}."
    for i in range(400)
]


def test_the_committed_recipe_loads() -> None:
    recipe = load_recipe(ROOT / "configs" / "tts_corpus.yaml")
    assert len(recipe.kokoro_voices) >= 30  # the issue wants >= 30 voices that pass the gate
    assert len({v.name for v in recipe.kokoro_voices}) == len(recipe.kokoro_voices)
    assert recipe.gate.sentences == 30 and recipe.gate.max_wer == 0.10 and recipe.gate.min_dnsmos == 3.0
    assert recipe.classic_sentences + recipe.kokoro_sentences == recipe.sentences
    described = [v.describe() for v in recipe.kokoro_voices]
    assert len({(str(d["timbre"]), str(d["prosody"])) for d in described}) == len(described)  # distinct mixes


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(body)
    return path


GOOD = """
seed: 3
sentences: 60
gate: {sentences: 5, min_words: 3, max_words: 9}
engines:
  classic: {share: 0.5}
  kokoro:
    share: 0.5
    voices:
      - {name: a, timbre: {jf_alpha: 1}}
      - {name: b, timbre: {jm_kumo: 1}, prosody: {jf_alpha: 1}, speed: 1.1}
"""


def test_the_split_is_disjoint_and_keeps_the_classic_plan(tmp_path) -> None:
    recipe = load_recipe(_recipe(tmp_path, GOOD))
    plan = plan_corpus(SENTENCES, recipe)
    assert plan.classic == plan_speaker_jobs(SENTENCES, TTS_SPEAKERS, 3)[:30]  # clips built before are reused
    classic_texts = {j.key.rsplit("_", 1)[1] for j in plan.classic}
    kokoro_ids = {i for i, _ in plan.kokoro_sentences}
    gate_ids = {i for i, _ in plan.gate_sentences}
    assert len(kokoro_ids) == 30 and len(gate_ids) == 5
    assert not ({f"{i:05d}" for i in kokoro_ids | gate_ids} & classic_texts) and not (kokoro_ids & gate_ids)
    assert all(
        3 <= len(text.split()) <= 9 and not any(c.isdigit() for c in text) for _, text in plan.gate_sentences
    )
    a, b = recipe.kokoro_voices
    jobs = kokoro_corpus_jobs([a, b], plan.kokoro_sentences)
    assert [j.speaker for j in jobs[:4]] == ["kokoro_a", "kokoro_b", "kokoro_a", "kokoro_b"]
    assert all(j.text == SENTENCES[int(j.key.rsplit("_", 1)[1])] for j in jobs)  # the name says the sentence
    assert {j.key for j in gate_jobs(a, plan.gate_sentences)}.isdisjoint(j.key for j in jobs)
    assert jobs[1].rate == 1.1 and jobs[1].kokoro == b and jobs[1].provenance()["prosody"] == {"jf_alpha": 1}


@pytest.mark.parametrize(
    "body,message",
    [
        (GOOD.replace("sentences: 60", "sentences: 600"), "pool has 400"),
        (GOOD.replace("jf_alpha: 1}}", "af_heart: 1}}"), "unknown base voices"),
        (GOOD.replace("share: 0.5}", "share: 0.7}"), "sum to 1.200"),
        (GOOD.replace("name: b", "name: a"), "voice names repeat"),
        (GOOD.replace("classic:", "piper:"), "unknown engines"),
        (GOOD.replace("sentences: 60\n", ""), "KeyError"),
    ],
)
def test_bad_recipes_name_the_file_and_the_reason(tmp_path, body, message) -> None:
    path = _recipe(tmp_path, body)
    with pytest.raises(RecipeError) as err:
        plan_corpus(SENTENCES, load_recipe(path))
    assert str(path) in str(err.value) or "pool" in str(err.value)
    assert message in str(err.value)
