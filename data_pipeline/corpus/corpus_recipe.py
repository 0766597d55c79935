"""The TTS corpus recipe (configs/tts_corpus.yaml): which engines and voices read how many sentences.

The sentence pool is shuffled once with the recipe's seed. The classic voices (flite + espeak-ng) take the
first `share` of `sentences` exactly as `plan_speaker_jobs` always did (so clips built before the recipe
existed are reused), Kokoro the next share, and the gate sentences come from what is left: short (a few
words), digit-free sentences that every candidate voice reads, so their scores compare voices, not texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from data_pipeline.corpus.kokoro_voice import KokoroVoice
from data_pipeline.corpus.synthetic_speech import TTS_SPEAKERS, SynthJob, plan_speaker_jobs, shuffled_order


class RecipeError(ValueError):
    """The recipe file is missing a field or has a bad value; the message names the file."""


@dataclass(frozen=True)
class GateSettings:
    sentences: int = 30
    max_wer: float = 0.10
    min_dnsmos: float = 3.0
    min_words: int = 6
    max_words: int = 14


@dataclass(frozen=True)
class CorpusRecipe:
    seed: int
    sentences: int
    classic_share: float
    kokoro_share: float
    kokoro_voices: tuple[KokoroVoice, ...]
    gate: GateSettings

    @property
    def classic_sentences(self) -> int:
        return round(self.sentences * self.classic_share)

    @property
    def kokoro_sentences(self) -> int:
        return round(self.sentences * self.kokoro_share)


def load_recipe(path: str | Path) -> CorpusRecipe:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: cannot read the corpus recipe: {e}") from e
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    try:
        engines = raw["engines"]
        unknown = set(engines) - {"classic", "kokoro"}
        if unknown:
            raise RecipeError(f"{path}: unknown engines {sorted(unknown)} (known: classic, kokoro)")
        classic = engines.get("classic") or {"share": 0.0}
        kokoro = engines.get("kokoro") or {"share": 0.0, "voices": []}
        voices = tuple(KokoroVoice(name=f"kokoro_{v['name']}", timbre=dict(v["timbre"]),
                                   prosody=dict(v.get("prosody") or {}), speed=float(v.get("speed", 1.0)))
                       for v in kokoro.get("voices") or [])
        recipe = CorpusRecipe(seed=int(raw.get("seed", 0)), sentences=int(raw["sentences"]),
                              classic_share=float(classic["share"]), kokoro_share=float(kokoro["share"]),
                              kokoro_voices=voices, gate=GateSettings(**(raw.get("gate") or {})))
    except RecipeError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise RecipeError(f"{path}: bad corpus recipe: {type(e).__name__}: {e}") from e
    if abs(recipe.classic_share + recipe.kokoro_share - 1.0) > 0.01:
        total = recipe.classic_share + recipe.kokoro_share
        raise RecipeError(f"{path}: engine shares sum to {total:.3f}, not 1")
    names = [v.name for v in voices]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: voice names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    if recipe.kokoro_share > 0 and not voices:
        raise RecipeError(f"{path}: kokoro has a share but no voices")
    return recipe


def _gate_worthy(text: str, gate: GateSettings) -> bool:
    words = text.split()
    return gate.min_words <= len(words) <= gate.max_words and not re.search(r"\d", text)


@dataclass(frozen=True)
class CorpusPlan:
    classic: list[SynthJob]
    kokoro_sentences: list[tuple[int, str]]  # (index in the sentence pool, text): the index names the clip
    gate_sentences: list[tuple[int, str]]


def plan_corpus(sentences: list[str], recipe: CorpusRecipe) -> CorpusPlan:
    """Split the pool: classic jobs (as plan_speaker_jobs), Kokoro's sentences, the gate sentences.
    Clips are named by their sentence's index in the pool, so a clip on disk always reads the text its
    name says, whatever recipe planned it (a clip no plan wants is set aside by the build)."""
    order = shuffled_order(len(sentences), recipe.seed)
    n_classic, n_kokoro = recipe.classic_sentences, recipe.kokoro_sentences
    if n_classic + n_kokoro + recipe.gate.sentences > len(order):
        raise RecipeError(f"the recipe needs {n_classic + n_kokoro} sentences + {recipe.gate.sentences} for "
                          f"the gate; the pool has {len(order)}")
    rest = [(i, sentences[i]) for i in order[n_classic + n_kokoro:]]
    gate = [(i, text) for i, text in rest if _gate_worthy(text, recipe.gate)][: recipe.gate.sentences]
    if len(gate) < recipe.gate.sentences:
        raise RecipeError(f"only {len(gate)} sentences of {recipe.gate.min_words}-{recipe.gate.max_words} "
                          f"words left for the gate; {recipe.gate.sentences} needed")
    classic = plan_speaker_jobs(sentences, TTS_SPEAKERS, recipe.seed)[:n_classic]
    return CorpusPlan(classic=classic,
                      kokoro_sentences=[(i, sentences[i]) for i in order[n_classic:n_classic + n_kokoro]],
                      gate_sentences=gate)


def kokoro_job(voice: KokoroVoice, key: str, text: str) -> SynthJob:
    return SynthJob(key, "kokoro", voice.name, text, voice.speed, 0.0, speaker=voice.name, kokoro=voice)


def gate_jobs(voice: KokoroVoice, gate_sentences: list[tuple[int, str]]) -> list[SynthJob]:
    return [kokoro_job(voice, f"{voice.name}_gate{i:05d}", text) for i, text in gate_sentences]


def kokoro_corpus_jobs(voices: list[KokoroVoice], sentences: list[tuple[int, str]]) -> list[SynthJob]:
    """Each sentence once, by the voices in turn (the order of the recipe)."""
    return [kokoro_job(voices[k % len(voices)], f"{voices[k % len(voices)].name}_{i:05d}", text)
            for k, (i, text) in enumerate(sentences)] if voices else []
