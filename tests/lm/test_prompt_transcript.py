"""Prompt transcription (lm/inference/prompt_transcript.py): generate.py without --prompt-text hands the
model Whisper's transcript of a real clip (continuation mode), and falls back to speaker-prompt mode, saying
so, when there are no words or the words do not fit the audio. Real Whisper tiny.en (the `eval` extra),
real aligner, tiny phone-aligned export with random weights."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lm.inference.prompt_transcript import PromptTranscriber, TranscriberUnavailable, auto_prompt_text
from lm.inference.synthesizer import Synthesizer
from tests.suite_helpers import build_tiny_export

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "tests" / "data" / "speech" / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0001.wav"
CLIP_TEXT = "Author of the danger trail, Philip Steels, etc."


@pytest.fixture(scope="module")
def transcriber() -> PromptTranscriber:
    return PromptTranscriber(cpu_threads=1)


@pytest.fixture(scope="module")
def aligned_export(tmp_path_factory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("aligned") / "export", alignment="phoneme")


class FixedTranscript(PromptTranscriber):
    """A transcriber that 'hears' a given text: the wrong transcript Whisper can produce on a bad clip."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def transcribe(self, wav, sample_rate: int) -> str:  # noqa: ANN001
        return self.text


def test_whisper_transcribes_a_real_prompt_at_any_rate_and_layout(transcriber) -> None:
    wav, rate = sf.read(CLIP, dtype="float32")
    text = transcriber.transcribe(wav, rate).lower()
    assert "author of the danger trail" in text and "steels" in text
    stereo = np.stack([wav, wav], axis=1)  # soundfile's [T, C]
    assert transcriber.transcribe(stereo, rate).lower() == text
    assert transcriber.transcribe(np.zeros(rate, dtype=np.float32), rate) == ""  # silence: no words


def test_auto_prompt_text_fits_the_aligner_or_falls_back(transcriber, aligned_export, caplog) -> None:
    synth = Synthesizer.from_pretrained(aligned_export, temperature=0.0)
    wav, rate = sf.read(CLIP, dtype="float32")
    text = auto_prompt_text(synth, transcriber, wav, rate)
    assert text is not None and "danger trail" in text.lower()
    with caplog.at_level(logging.WARNING):
        wrong = "Printing, in the only sense with which we are at present concerned, differs from most arts."
        assert auto_prompt_text(synth, FixedTranscript(wrong), wav, rate) is None
        assert "does not fit its audio" in caplog.text and "speaker-prompt mode" in caplog.text
        assert auto_prompt_text(synth, FixedTranscript(""), wav, rate) is None
        assert "no words heard" in caplog.text


def test_a_missing_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(TranscriberUnavailable, match="no model.bin"):
        PromptTranscriber(tmp_path).transcribe(np.zeros(1600, dtype=np.float32), 16000)


def test_generate_without_prompt_text_continues_the_transcribed_prompt(aligned_export, tmp_path,
                                                                         capsys) -> None:
    spec = importlib.util.spec_from_file_location("generate_script", ROOT / "scripts" / "generate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--checkpoint", str(aligned_export), "--prompt-audio", str(CLIP), "--text", "Hello there.",
              "--seed", "2", "--max-seconds", "0.5", "--threads", "1"]

    def run(*extra: str) -> tuple[np.ndarray, str]:
        out = tmp_path / f"out-{len(list(tmp_path.glob('out-*.wav')))}.wav"
        assert script.main([*common, *extra, "--out", str(out)]) == 0
        return sf.read(out, dtype="int16")[0], capsys.readouterr().out

    auto, printed = run()
    heard = printed.split("prompt transcript (Whisper): ", 1)[1].splitlines()[0]
    assert "danger trail" in heard.lower()
    given, printed = run("--prompt-text", heard)
    assert "prompt transcript" not in printed
    # continuation mode with Whisper's words: the same length, samples equal to float rounding (seen here at
    # most 13 int16 steps apart: the first call ran Whisper in the same process, the second did not)
    assert auto.shape == given.shape and np.abs(auto.astype(int) - given).max() <= 32
    speaker, printed = run("--speaker-prompt")
    assert "prompt transcript" not in printed and "speaker-prompt" in printed
    assert speaker.shape != auto.shape or np.abs(speaker.astype(int) - auto).max() > 1000
    with pytest.raises(SystemExit):  # a transcript and --speaker-prompt contradict each other
        script.parse_args([*common, "--out", "x.wav", "--prompt-text", CLIP_TEXT, "--speaker-prompt"])
