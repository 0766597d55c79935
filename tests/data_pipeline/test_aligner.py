"""The forced aligner (models/aligner): accurate on voices it never trained on, honest about what it
cannot fit, loadable from what the project trains itself, and usable from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec.audio import load_audio
from data_pipeline.alignment.aligner import Aligner, AlignmentError
from data_pipeline.alignment.model import ClassifierConfig
from data_pipeline.alignment.phones import PAUSE
from data_pipeline.alignment.scoring import boundary_errors, summary
from data_pipeline.alignment.synthetic_set import HELDOUT_VOICES, Job, build_set, synthesize_timed
from data_pipeline.alignment.training import TrainConfig, train_classifier

REPO = Path(__file__).resolve().parents[2]
ARCTIC = REPO / "tests" / "data" / "speech" / "cmu-arctic-sample"
# sentences from no aligner training set (the held-out end of the sentence file is not read here)
SENTENCES = ["The old lighthouse keeper counted the ships that passed before dawn.",
             "Bright copper kettles were stacked beside the narrow kitchen window."]


@pytest.fixture(scope="module")
def aligner() -> Aligner:
    return Aligner.load()


def test_unseen_voices_align_within_tens_of_milliseconds(aligner: Aligner) -> None:
    errors = []
    for voice in (HELDOUT_VOICES[1], HELDOUT_VOICES[-1]):  # flite kal16 slowed down; espeak en-us-nyc fast
        for text in SENTENCES:
            wav, truth = synthesize_timed(text, voice)
            hyp = aligner.align(wav, 16000, text)
            assert [w.word for w in hyp.words] == [w.word for w in truth.words]
            errors += boundary_errors(truth, hyp).words
    s = summary(errors)
    assert s["median_ms"] <= 30 and s["within_50ms"] >= 0.85, s


def test_real_speech_aligns_to_its_words(aligner: Aligner) -> None:
    wav, sr = load_audio(ARCTIC / "cmu_arctic_us_aew_a0003.wav")
    text = "For the twentieth time that evening the two men shook hands."
    a = aligner.align(wav, sr, text)
    assert [w.word for w in a.words] == text.rstrip(".").split()
    assert all(w.end > w.start for w in a.words)
    assert all(b.start >= w.end - 1e-9 for w, b in zip(a.words, a.words[1:], strict=False))
    assert a.phones[0].start == 0 and a.phones[-1].end == pytest.approx(a.duration)
    assert a.words[0].start > 0.05 and a.words[-1].end < a.duration  # the recording's silences are pauses
    assert a.aligner.startswith("codectts-aligner") and "hama" in a.aligner and a.score is not None


def test_bad_inputs_are_refused_with_a_reason(aligner: Aligner) -> None:
    wav, truth = synthesize_timed(SENTENCES[0], HELDOUT_VOICES[0])
    with pytest.raises(AlignmentError, match="poor_fit") as e:  # another clip's transcript
        aligner.align(wav, 16000, "Will we ever forget it, asked the tired gardener at noon on Sunday.")
    assert e.value.reason == "poor_fit" and e.value.score is not None and "score" in str(e.value)
    with pytest.raises(AlignmentError, match="empty_transcript"):
        aligner.align(wav, 16000, "  ")
    with pytest.raises(AlignmentError, match="empty_transcript"):
        aligner.align(wav, 16000, "-- !")
    with pytest.raises(AlignmentError, match="silence"):
        aligner.align(np.zeros(32000, np.float32), 16000, SENTENCES[0])
    with pytest.raises(AlignmentError) as hum:  # a low hum is not speech either
        aligner.align(0.01 * np.sin(np.arange(32000) / 20.0).astype(np.float32), 16000, SENTENCES[0])
    assert hum.value.reason in ("silence", "poor_fit")
    with pytest.raises(AlignmentError, match="audio_too_short"):
        aligner.align(wav[:3200], 16000, SENTENCES[0])  # 0.2 s for a 12-word sentence
    with pytest.raises(AlignmentError):  # four times the words of the audio
        aligner.align(wav, 16000, " ".join([SENTENCES[0]] * 4))


def test_align_cli(tmp_path: Path) -> None:
    wav, _ = synthesize_timed(SENTENCES[1], HELDOUT_VOICES[2])
    good = tmp_path / "good.wav"
    sf.write(good, wav, 16000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    script = [sys.executable, str(REPO / "scripts" / "align.py")]
    out = tmp_path / "good.json"
    done = subprocess.run(script + ["--audio", str(good), "--text", SENTENCES[1], "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert [w["word"] for w in result["words"]] == SENTENCES[1].rstrip(".").split()
    assert set(result["phones"][0]) == {"phone", "start", "end", "word_index"}
    assert result["frame_rate"] == 50.0 and "hama" in result["aligner"]
    assert {p["word_index"] for p in result["phones"] if p["phone"] == PAUSE} <= {-1}

    bad = subprocess.run(script + ["--audio", str(silent), "--text", SENTENCES[1]], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and str(silent) in bad.stderr and "silence" in bad.stderr

    listing = tmp_path / "clips.tsv"
    listing.write_text(f"good.wav\t{SENTENCES[1]}\nsilent.wav\t{SENTENCES[1]}\n")
    many = subprocess.run(script + ["--list", str(listing), "--out-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert many.returncode == 1
    assert (tmp_path / "out" / "good.align.json").is_file()
    assert not (tmp_path / "out" / "silent.align.json").exists()
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["audio"]).name, r["reason"]) for r in rejects] == [("silent.wav", "silence")]


def test_a_tiny_aligner_trains_saves_and_loads(tmp_path: Path) -> None:
    """The real training and loading path on a model the test builds itself."""
    jobs = [Job(text, voice) for text in SENTENCES for voice in HELDOUT_VOICES[:2]]
    assert build_set(jobs, tmp_path / "train", workers=1) == 4
    assert build_set(jobs[:1], tmp_path / "held", workers=1) == 1
    tiny = ClassifierConfig(channels=16, conv_layers=1, rnn_hidden=8)
    limits = {"max_gap": 100.0, "min_speech_share": 0.0}  # an untrained model fits nothing well
    train_classifier(tmp_path / "train", tmp_path / "held", tmp_path / "ckpt", tmp_path / "model",
                     TrainConfig(epochs=2, batch_clips=2), tiny, limits=limits)
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    loaded = Aligner.load(tmp_path / "model")
    assert loaded.model.cfg == tiny and loaded.limits.max_gap == 100.0
    wav, _ = synthesize_timed(SENTENCES[0], HELDOUT_VOICES[0])
    a = loaded.align(wav, 16000, SENTENCES[0])
    assert len(a.words) == len(SENTENCES[0].split())
    with pytest.raises(FileNotFoundError, match="no aligner in"):
        Aligner.load(tmp_path / "nowhere")


def test_bench_align_runs_and_beats_its_baseline(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_align.py"), "--clips", "3",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| all |" in done.stdout and "baseline" in done.stdout
    figures = json.loads(out.read_text())["figures"]["all"]
    assert figures["words"]["n"] > 0 and figures["audio_seconds"] > 0
    # the forced aligner's word starts are closer to the truth than hama's greedy CTC path
    assert figures["word_starts"]["median_ms"] < figures["baseline_word_starts"]["median_ms"]
