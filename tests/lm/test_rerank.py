"""Best of N (`candidates`, lm/inference/rerank.py): the forced aligner's fit picks the draw that says the
text; the synthesizer draws N rows per piece in one batch and returns the one it picked. Real aligner (hama),
real clips, tiny phone-aligned export with random weights."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import lm.inference.synthesizer as synthesizer_module
from lm.inference.rerank import fit_gap, pick_best
from lm.inference.synthesis_types import SynthesisError
from lm.inference.synthesizer import Synthesizer
from tests.suite_helpers import build_tiny_export

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech"
AEW1 = SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0001.wav"
AEW1_TEXT = "Author of the danger trail, Philip Steels, etc."
AXB4 = SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_axb_a0004.wav"  # "Lord, but I'm glad to see you again"


def test_the_clip_that_says_the_text_is_picked() -> None:
    right, rate = sf.read(AEW1, dtype="float32")
    other, other_rate = sf.read(AXB4, dtype="float32")
    assert other_rate == rate
    silence = np.zeros(rate, dtype=np.float32)
    assert fit_gap(silence, rate, AEW1_TEXT) == math.inf
    assert fit_gap(right, rate, AEW1_TEXT) + 0.5 < fit_gap(other, rate, AEW1_TEXT)
    assert pick_best([other, silence, right], rate, AEW1_TEXT) == 2
    assert pick_best([right, other], rate, AEW1_TEXT) == 0


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("rerank") / "export", alignment="phoneme")


@pytest.fixture(scope="module")
def synth(export) -> Synthesizer:
    return Synthesizer.from_pretrained(export, temperature=1.0, max_seconds=0.6)


def test_synthesize_returns_the_draw_the_aligner_fits_best(synth, monkeypatch) -> None:
    prompt = sf.read(AEW1, dtype="float32")
    seen = []

    def spy(wavs, sample_rate, text):  # the real pick, recorded
        best = pick_best(wavs, sample_rate, text)
        seen.append(([fit_gap(w, sample_rate, text) for w in wavs], wavs, best, text))
        return best

    monkeypatch.setattr(synthesizer_module, "pick_best", spy)
    text = "Hello there. Good morning."
    result = synth.synthesize(text, *prompt, seed=4, candidates=3)
    assert [s[3] for s in seen] == ["Hello there.", "Good morning."] == result.pieces
    for gaps, wavs, best, _ in seen:
        assert len(wavs) == 3 and gaps[best] == min(gaps)
        assert len({w.tobytes() for w in wavs}) == 3  # three different draws
    first = seen[0][1][seen[0][2]]
    np.testing.assert_array_equal(result.wav[: len(first)], np.clip(first, -1, 1))
    again = synth.synthesize(text, *prompt, seed=4, candidates=3)
    np.testing.assert_array_equal(again.wav, result.wav)  # reproducible for a seed


def test_one_candidate_is_the_plain_path_and_bad_counts_are_refused(synth, monkeypatch, caplog) -> None:
    prompt = sf.read(AEW1, dtype="float32")
    plain = synth.synthesize("Hello there.", *prompt, seed=2)
    monkeypatch.setattr(synthesizer_module, "pick_best", lambda *a: pytest.fail("ranked a single draw"))
    single = synth.synthesize("Hello there.", *prompt, seed=2, candidates=1)
    np.testing.assert_array_equal(single.wav, plain.wav)
    with pytest.raises(SynthesisError, match="candidates must be >= 1"):
        synth.synthesize("Hello there.", *prompt, candidates=0)
    with caplog.at_level(logging.INFO, logger="lm.inference.streaming"):
        chunks = list(synth.stream("Hello there.", *prompt, seed=2, candidates=3))
    assert chunks and "candidates=3 is not used" in caplog.text


def test_generate_script_candidates_flag(export, synth, tmp_path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_script", ROOT / "scripts" / "generate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "best.wav"
    assert script.main(["--checkpoint", str(export), "--prompt-audio", str(AEW1), "--text", "Hello there.",
                        "--speaker-prompt", "--candidates", "2", "--seed", "3", "--temperature", "1.0",
                        "--max-seconds", "0.6", "--threads", "1", "--out", str(out)]) == 0
    written, _ = sf.read(out, dtype="float32")
    want = synth.synthesize("Hello there.", *sf.read(AEW1, dtype="float32"), seed=3, candidates=2).wav
    np.testing.assert_allclose(written, want, atol=1.5 / 32768)  # the 16-bit WAV of the same draw
