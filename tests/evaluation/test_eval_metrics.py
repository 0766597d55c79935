"""The metric models on known real inputs: identical audio, same speaker, different speakers, noise."""

import numpy as np
import pytest

from evaluation.audio import load_audio
from evaluation.quality import pesq_wb, stoi


@pytest.fixture(scope="module")
def clips(speech_dir):
    arctic = speech_dir / "cmu-arctic-sample"
    return {
        "aew1": load_audio(arctic / "cmu_arctic_us_aew_a0001.wav"),
        "aew2": load_audio(arctic / "cmu_arctic_us_aew_a0002.wav"),
        "axb4": load_audio(arctic / "cmu_arctic_us_axb_a0004.wav"),
        "lj2": load_audio(speech_dir / "ljspeech-sample" / "LJ001-0002.wav"),  # 22.05 kHz
        # 4.5 s: DNSMOS repeats it once to 9 s and scores a single window (short clips cost several)
        "lj11": load_audio(speech_dir / "ljspeech-sample" / "LJ001-0011.wav"),
    }


def test_identical_audio_gives_wer_zero_and_sim_one(scorers, clips):
    wav, rate = clips["lj2"]
    hypothesis, we = scorers.asr.score(wav, rate, "in being comparatively modern.")
    assert we.wer == 0.0, hypothesis
    # The same audio twice: the transcripts agree exactly and the speaker embeddings coincide.
    assert scorers.asr.transcribe(wav, rate) == hypothesis
    assert scorers.speaker.similarity(wav, rate, wav, rate) == pytest.approx(1.0, abs=1e-5)


def test_same_speaker_scores_clearly_above_different_speakers(scorers, clips):
    same = scorers.speaker.similarity(*clips["aew1"], *clips["aew2"])
    different = scorers.speaker.similarity(*clips["aew1"], *clips["axb4"])
    # Issue 4's reference figures on real speech: same speaker ~0.87, different ~0.52.
    assert 0.8 < same < 0.95
    assert 0.4 < different < 0.65
    assert same - different > 0.2


def test_silence_cannot_be_embedded(scorers):
    with pytest.raises(ValueError, match="silent"):
        scorers.speaker.embed(np.zeros(16000, dtype=np.float32), 16000)


def test_dnsmos_prefers_speech_over_noise(scorers, clips):
    speech = scorers.dnsmos(*clips["lj11"])
    noise = scorers.dnsmos(np.random.default_rng(0).uniform(-0.5, 0.5, 152000).astype(np.float32), 16000)
    assert set(speech) == {"ovrl", "sig", "bak", "p808"}
    assert 2.5 < speech["ovrl"] < 4.5
    assert noise["ovrl"] < speech["ovrl"] - 1.0


def test_pesq_and_stoi_on_identical_and_degraded_audio(clips):
    wav, rate = clips["lj2"]
    noisy = wav + np.random.default_rng(0).normal(0, 0.05, wav.shape).astype(np.float32)
    assert pesq_wb(wav, rate, wav, rate) > 4.5
    assert stoi(wav, rate, wav, rate) > 0.99
    assert pesq_wb(wav, rate, noisy, rate) < 2.0
    assert stoi(wav, rate, noisy, rate) < 0.95
    # A codec pads to whole frames: trailing extra samples are cut, not scored as misalignment.
    padded = np.concatenate([wav, np.zeros(320, dtype=np.float32)])
    assert pesq_wb(wav, rate, padded, rate) > 4.5


def test_asr_model_flag_takes_a_local_ctranslate2_dir(tmp_path):
    from evaluation.asr import ASRConfig, WhisperASR, bundled_whisper_path

    with pytest.raises(FileNotFoundError, match="no model.bin"):
        WhisperASR(ASRConfig(model=str(tmp_path)))
    assert (bundled_whisper_path() / "model.bin").is_file()
