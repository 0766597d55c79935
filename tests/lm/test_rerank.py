"""Best of N (lm/inference/rerank.py, DecodeConfig.candidates): hama's phone recogniser on real speech, the
phone error rate that ranks readings, and the Synthesizer keeping the best of several readings."""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_pipeline.alignment.phone_recognizer import UNKNOWN, hama_to_canonical, recognise_phones
from data_pipeline.alignment.phones import NONE_ID, PAUSE_ID, PHONE_ID
from lm.inference.phone_alignment import reading_pace, spoken_span_frames, text_phones
from lm.inference.rerank import (
    best_reading,
    competing_readings,
    edit_distance,
    keep_reading,
    phone_error_rate,
)
from lm.inference.row_batches import plan_batches, readings_to_hear
from lm.inference.synthesis_types import DecodeConfig, SynthesisError, _Row
from lm.inference.synthesizer import Synthesizer
from tests.suite_helpers import SPEECH, build_tiny_export

TRANSCRIPTS = {row["file"]: row["transcript"]
               for row in csv.DictReader((SPEECH / "MANIFEST.tsv").open(), delimiter="\t")}
LJ2 = "ljspeech-sample/LJ001-0002.wav"  # "in being comparatively modern."
LJ4 = "ljspeech-sample/LJ001-0004.wav"
AEW = "cmu-arctic-sample/cmu_arctic_us_aew_a0001.wav"


def clip(name: str) -> tuple[np.ndarray, int]:
    return sf.read(SPEECH / name, dtype="float32")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/lm/conftest.py


def test_edit_distance() -> None:
    assert edit_distance([], []) == 0
    assert edit_distance(["a", "b"], []) == 2
    assert edit_distance([], ["a"]) == 1
    assert edit_distance(["k", "ae", "t"], ["k", "ae", "t"]) == 0
    assert edit_distance(["k", "ae", "t"], ["k", "ah", "t"]) == 1  # substitution
    assert edit_distance(["k", "ae", "t", "s"], ["k", "ae", "t"]) == 1  # deletion
    assert edit_distance(["s", "k", "ae", "t"], ["k", "ae", "t", "s"]) == 2


def test_hama_symbols_map_onto_the_phone_inventory() -> None:
    assert hama_to_canonical("ɝ") == ("er",)
    assert hama_to_canonical("tʰ") == ("t",)
    assert hama_to_canonical("d͡ʒ") == ("jh",)
    assert hama_to_canonical("oʊ") == ("ow",)
    assert hama_to_canonical(",") == ()
    assert hama_to_canonical("一") == (UNKNOWN,)  # a foreign symbol is an error, not silently dropped


def test_the_recogniser_hears_real_speech_close_to_its_transcript() -> None:
    wav, rate = clip(LJ2)
    heard = recognise_phones(wav, rate)
    own = text_phones(TRANSCRIPTS[LJ2])
    assert own[:3] == ["ih", "n", "b"]
    assert edit_distance(heard, own) / len(own) < 0.35
    # the same clip against another clip's transcript reads far worse
    assert phone_error_rate(wav, rate, TRANSCRIPTS[LJ2]) + 0.4 < phone_error_rate(wav, rate, TRANSCRIPTS[AEW])
    # resampling is handled at the edge: the 16 kHz copy is heard the same way
    from codec.audio import resample

    wav16 = resample(torch.from_numpy(wav)[None], rate, 16000)[0].numpy()
    assert recognise_phones(wav16, 16000) == heard
    assert recognise_phones(np.zeros(800, dtype=np.float32), 16000) == []  # 50 ms: nothing to hear


def test_best_reading_keeps_the_one_that_says_the_text() -> None:
    text = TRANSCRIPTS[LJ4]
    target, rate = clip(LJ4)
    other, other_rate = clip(LJ2.replace("0002", "0003"))
    assert other_rate == rate
    silence = np.zeros(rate, dtype=np.float32)
    noise = np.random.default_rng(0).normal(0, 0.1, rate * 3).astype(np.float32)
    keep, errors, words = best_reading([silence, noise, other, target], rate, text)
    assert keep == 3, errors
    assert all(math.isnan(w) for w in words)  # no word judge: no word error rates
    assert errors[3] == min(errors) and errors[3] < 0.4 and errors[0] == 1.0  # silence: every phone missed
    # a tie keeps the earliest; a text with no phones compares nothing and keeps the first
    assert best_reading([target, target], rate, text)[0] == 0
    keep, errors, _ = best_reading([noise, target], rate, "...")
    assert keep == 0 and all(math.isnan(e) for e in errors)


def test_a_readings_pace_is_timed_over_its_spoken_span() -> None:
    aa, k = PHONE_ID["aa"], PHONE_ID["k"]
    frames = torch.tensor([NONE_ID, PAUSE_ID, PAUSE_ID, k, k, aa, PAUSE_ID, PAUSE_ID, aa, k, PAUSE_ID,
                           NONE_ID])
    assert spoken_span_frames(frames) == 7  # frames 3..9: the pause inside counts, the ends do not
    assert spoken_span_frames(torch.tensor([PAUSE_ID, NONE_ID])) == 0
    # "cock" has three phones (k aa k): 7 frames at 50 Hz over 3 phones
    assert reading_pace(frames, "cock", 50.0) == pytest.approx(7 / 50 / 3)
    assert reading_pace(torch.tensor([PAUSE_ID] * 4), "cock", 50.0) is None
    assert reading_pace(frames, "...", 50.0) is None


def test_keep_reading_prefers_the_speakers_pace_then_the_fewest_phone_errors() -> None:
    errors = [0.10, 0.20, 0.30, 0.05]
    assert keep_reading(errors) == 3  # no pace known: the fewest errors
    # the prompt reads at 0.1 s a phone: readings 1 and 2 are within 15 %, 0 within 25 %, 3 in neither
    paces = [0.12, 0.11, 0.095, 0.07]
    assert keep_reading(errors, paces, 0.1, tolerance=0.15) == 1
    assert keep_reading(errors, paces, 0.1, tolerance=0.0) == 3  # 0: pace not considered
    assert keep_reading(errors, paces, 0.1) == 0  # the default +-25 % lets 0.12 in
    # none within 15 %: the closest in pace (on a log scale: 0.12 is closer than 0.08)
    assert keep_reading(errors, [0.2, 0.12, 0.08, 0.3], 0.1, tolerance=0.15) == 1
    # a reading whose pace is unknown does not compete when the prompt's is known
    assert keep_reading(errors, [None, 0.1, None, None], 0.1) == 1
    assert keep_reading([float("nan"), 0.5], [0.1, 0.1], 0.1) == 1  # an unknown error rate loses
    assert keep_reading([0.2, 0.2], [0.1, 0.1], 0.1) == 0  # a tie keeps the earliest


def test_competing_readings_and_the_readings_worth_hearing() -> None:
    paces = [0.12, 0.11, 0.095, 0.07]
    assert competing_readings(4) == [0, 1, 2, 3]  # no pace known: all compete
    assert competing_readings(4, paces, 0.1) == [0, 1, 2]
    assert competing_readings(4, paces, 0.1, tolerance=0.15) == [1, 2]
    assert competing_readings(4, paces, 0.1, tolerance=0.0) == [0, 1, 2, 3]
    assert competing_readings(4, [0.2, 0.12, 0.08, None], 0.1, tolerance=0.15) == [1]  # none: the closest
    # best_reading hears only the readings that compete; one ruled out by pace may come without audio
    rate = 16000
    keep, errors, _ = best_reading([None, np.zeros(rate, np.float32)], rate, "hello", [0.3, 0.1], 0.1)
    assert keep == 1 and math.isnan(errors[0]) and errors[1] == 1.0  # silence: every phone missed

    def row(request: int, piece: int, k: int, candidates: int = 3, text: str = "one two") -> _Row:
        return _Row(request, piece, torch.ones(len(text)), torch.zeros(4, 5, dtype=torch.long), None,
                    DecodeConfig(candidates=candidates, batch_size=4), candidate=k, text=text,
                    target_pace=0.1)

    rows = [row(0, 0, k) for k in range(3)] + [row(0, 1, k, text="three") for k in range(3)]
    rows.append(row(1, 0, 0, candidates=1))
    batches = plan_batches(rows, None)
    for batch in batches:  # a piece's readings are never split over two AR batches
        assert len(batch) <= 4 or len({(r.request, r.piece) for r in batch}) == 1
    pieces = [[(r.request, r.piece) for r in b] for b in batches]
    assert sorted(p for b in pieces for p in b) == sorted((r.request, r.piece) for r in rows)
    for key in {(r.request, r.piece) for r in rows}:
        assert sum(key in b for b in pieces) == 1
    big = [row(0, 0, k, candidates=6) for k in range(6)]
    assert [len(b) for b in plan_batches(big, None)] == [6]  # more readings than batch_size: a batch alone
    # of piece (0, 0) only the readings near the prompt's pace are heard; the lone reading of request 1 is
    assert readings_to_hear(rows[:3] + rows[6:], [0.3, 0.11, 0.09, None]) == [1, 2, 3]
    assert readings_to_hear(rows[:3], [0.3, 0.2, 0.05]) == [1]  # none near it: the closest (log scale)


@pytest.fixture(scope="module")
def aligned_export(tmp_path_factory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("rerank") / "export", alignment="phoneme")


def test_synthesizer_keeps_the_best_of_n_readings(aligned_export: Path, caplog) -> None:
    synth = Synthesizer.from_pretrained(aligned_export, temperature=0.9)
    wav, rate = clip(LJ2)
    text = "Hello there. Good morning to you."
    with pytest.raises(SynthesisError, match="candidates must be a whole number in"):
        synth.synthesize(text, wav, rate, candidates=0)
    with pytest.raises(SynthesisError, match="candidates must be"):
        synth.synthesize(text, wav, rate, candidates=17)
    with pytest.raises(SynthesisError, match="candidates must be"):
        synth.synthesize(text, wav, rate, candidates=2.5)
    with pytest.raises(SynthesisError, match=r"pace_tolerance must be in \[0, 1\)"):
        synth.synthesize(text, wav, rate, candidates=2, pace_tolerance=1.5)

    one = synth.synthesize(text, wav, rate, seed=3)
    assert one.candidates == 1 and one.piece_phone_errors == [] and "best of" not in one.summary()

    with caplog.at_level(logging.INFO, logger="lm.inference.rerank"):
        best = synth.synthesize(text, wav, rate, seed=3, candidates=3)
    assert best.candidates == 3 and len(best.pieces) == 2 and len(best.piece_phone_errors) == 2
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("best of 3")]
    assert len(logged) == 2  # one choice per sentence piece
    for message, kept_error in zip(logged, best.piece_phone_errors, strict=True):
        kept, errors, paces = re.search(r"kept reading (\d) \(phone error rates (.*); pace (.*) against",
                                        message).groups()
        errors = [float(e) for e in errors.split(", ")]
        assert paces == "?, ?, ?"  # speaker-prompt mode: the prompt's pace is not known, so only errors count
        assert len(errors) == 3 and errors[int(kept)] == min(errors)
        assert kept_error == pytest.approx(min(errors), abs=0.005)
    assert "best of 3    phone error rate of the kept readings" in best.summary()
    # the kept reading of a one-piece text is the output: its error rate can be recomputed from the wav
    single = synth.synthesize("Good morning to you.", wav, rate, seed=4, candidates=2)
    assert single.piece_phone_errors[0] == pytest.approx(
        phone_error_rate(single.wav, single.sample_rate, "Good morning to you."))
    # reproducible; greedy decoding draws one reading (all N would be the same)
    again = synth.synthesize(text, wav, rate, seed=3, candidates=3)
    assert np.array_equal(again.wav, best.wav)
    greedy = synth.synthesize(text, wav, rate, seed=3, candidates=3, temperature=0.0)
    assert greedy.candidates == 1 and greedy.piece_phone_errors == []

    batch = synth.synthesize_batch([{"text": text, "prompt_wav": wav, "prompt_sample_rate": rate, "seed": 1,
                                     "candidates": 2},
                                    {"text": "Good morning.", "prompt_wav": wav, "prompt_sample_rate": rate,
                                     "seed": 2}])
    assert batch[0].candidates == 2 and len(batch[0].piece_phone_errors) == 2
    assert all(math.isfinite(e) for e in batch[0].piece_phone_errors)
    assert batch[1].candidates == 1 and batch[1].piece_phone_errors == []


def test_generate_script_candidates_flag(aligned_export: Path, tmp_path, capsys) -> None:
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("generate_script", root / "scripts" / "generate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--checkpoint", str(aligned_export), "--prompt-audio", str(SPEECH / LJ2), "--text",
              "Good morning.", "--seed", "0", "--speaker-prompt", "--threads", "1", "--temperature", "0.9"]
    assert script.main([*common, "--candidates", "2", "--out", str(tmp_path / "a.wav")]) == 0
    out = capsys.readouterr().out
    assert "best of 2    phone error rate of the kept readings" in out
    assert sf.info(str(tmp_path / "a.wav")).frames > 0
    assert script.main([*common, "--candidates", "0", "--out", str(tmp_path / "b.wav")]) == 2
    assert "candidates must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "b.wav").exists()


def test_continuation_mode_keeps_a_reading_at_the_prompts_pace(aligned_export: Path, caplog) -> None:
    synth = Synthesizer.from_pretrained(aligned_export, temperature=1.0)
    wav, rate = clip(LJ2)
    with caplog.at_level(logging.INFO, logger="lm.inference.rerank"):
        result = synth.synthesize("Good morning to you, my friend.", wav, rate, prompt_text=TRANSCRIPTS[LJ2],
                                  seed=11, candidates=4)
    assert result.mode == "continuation" and result.candidates == 4
    message = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("best of 4"))
    kept, paces = re.search(r"kept reading (\d) .*; pace (.*) against", message).groups()
    ratios = [float(p) for p in paces.split(", ")]  # every reading's pace against the prompt's
    inside = [abs(np.log(r)) <= np.log(1.25) for r in ratios]
    errors = re.search(r"phone error rates (.*); pace", message).group(1).split(", ")
    if any(inside):
        assert inside[int(kept)]
        # the readings the pace rules out are never heard (no NAR, no codec, no recogniser): "-"
        assert [e != "-" for e in errors] == inside
    else:
        assert abs(np.log(ratios[int(kept)])) == min(abs(np.log(r)) for r in ratios)
        assert [e != "-" for e in errors].count(True) == 1
    assert len(set(ratios)) > 1  # the draws differ in pace, so the choice was a real one


def test_bench_best_of_n_prints_its_table(aligned_export: Path, capsys) -> None:
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_best_of_n", root / "scripts" / "bench_best_of_n.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--checkpoint", str(aligned_export), "--cases", "2", "--candidates", "1", "3",
                       "--judges", "phones", "phones+words"]) == 0
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in capsys.readouterr().out.splitlines()
            if re.match(r"\| \d+ \|", line)]
    assert [(int(r[0]), r[1]) for r in rows] == [(1, "-"), (3, "phones"), (3, "phones+words")]
    assert float(rows[0][3]) == 1.0 and rows[0][4] == "1 a piece"
    for row in rows[1:]:
        heard, drawn = (int(x) for x in re.match(r"(\d+) of (\d+)$", row[4]).groups())
        assert drawn == 3 * 2 and 2 <= heard <= drawn  # at least one reading a case is heard
        assert 0 <= float(row[5]) < 5
