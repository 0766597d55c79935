"""The committed default model (models/default, the one `generate.py` uses without --checkpoint): it loads
from the repository as published (fp16 weights, the referenced codec, its decoding defaults), is
phone-aligned, and reads a sentence it never trained on at about its real prompt speaker's pace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.audio import load_audio
from evaluation.pace import pace_ratio
from lm.inference.export_dir import DEFAULT_MODEL_DIR
from lm.inference.synthesizer import Synthesizer

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ROOT / "tests" / "data" / "speech" / "ljspeech-sample" / "LJ001-0002.wav"
PROMPT_TEXT = "in being comparatively modern."


@pytest.fixture(scope="module")
def default_model() -> Synthesizer:
    assert (DEFAULT_MODEL_DIR / "config.json").is_file(), f"{DEFAULT_MODEL_DIR}: the default model is missing"
    torch.set_num_threads(1)
    return Synthesizer.from_pretrained(DEFAULT_MODEL_DIR)


def test_the_default_model_loads_as_published(default_model: Synthesizer) -> None:
    assert default_model.phone_aligned
    assert default_model.defaults.temperature == 0.15  # metadata.decode, as publish_default.py stored it
    assert default_model.defaults.candidates == 4  # best of 4 at the prompt's pace (lm/inference/rerank.py)
    # judged by hama's phone error plus Whisper base's word error (lm/inference/word_judge.py)
    assert default_model.defaults.judge == "phones+words"
    assert default_model.sample_rate == 16000
    # house voices (lm/inference/house_voices.py): the AR reads the flite voice nearest the prompt
    assert default_model.defaults.ar_voice == "house"
    assert default_model.house_voices is not None and "flite_slt_1_170" in default_model.house_voices.names


def test_it_picks_a_matching_house_voice_for_real_prompts(default_model: Synthesizer) -> None:
    """LJ Speech (a woman) reads in a female flite voice, CMU ARCTIC aew (a man) in a male one."""
    speech = ROOT / "tests" / "data" / "speech"
    picks = {}
    for name, path in (("lj", PROMPT), ("aew", speech / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0001.wav")):
        wav, rate = load_audio(path)
        picks[name] = default_model.nearest_house_voice(default_model.encode_voice(wav, rate).codes)
    assert picks["lj"].startswith("flite_slt") and not picks["aew"].startswith("flite_slt"), picks


@pytest.mark.parametrize("prompt_text", [None, PROMPT_TEXT], ids=["speaker-prompt", "continuation"])
def test_it_reads_a_new_sentence_at_its_prompt_speakers_pace(default_model: Synthesizer,
                                                              prompt_text: str | None) -> None:
    text = "The printing press changed the world, and it changed it quickly."
    wav, rate = load_audio(PROMPT)
    result = default_model.synthesize(text, wav, rate, prompt_text=prompt_text, seed=0)
    out = result.wav
    assert out.ndim == 1 and np.isfinite(out).all() and np.abs(out).max() > 0.01
    # the pointer walk ends the utterance at the text's last phone, with the advance head's durations
    pace = pace_ratio(out, result.sample_rate, text, wav, rate, PROMPT_TEXT)
    assert 0.6 < pace < 1.6
    assert result.candidates == 4 and len(result.piece_phone_errors) == 1  # the published best of 4
    assert 0 <= result.piece_phone_errors[0] < 0.6
    if prompt_text is not None:  # the prompt's pace is known: best of 4 keeps a reading near it
        assert 0.7 < pace < 1.3, pace



def test_speed_scales_the_length_it_reads_at(default_model: Synthesizer) -> None:
    """speed (decode option, the server's OpenAI `speed`) with the lengths given before decoding
    (phone_durations="engine"): 1.5 reads the same sentence in about two thirds of the time, and it still
    ends at the text's last phone."""
    text = "The printing press changed the world, and it changed it quickly."
    wav, rate = load_audio(PROMPT)
    runs = [default_model.synthesize(text, wav, rate, prompt_text=PROMPT_TEXT, seed=0,
                                     phone_durations="engine", speed=speed) for speed in (1.0, 1.5)]
    ratio = sum(runs[1].piece_frames) / sum(runs[0].piece_frames)
    assert 0.6 < ratio < 0.75, ratio
    assert 0.7 < pace_ratio(runs[0].wav, runs[0].sample_rate, text, wav, rate, PROMPT_TEXT) < 1.3


def test_publish_references_the_repository_codec_the_export_carries(tmp_path) -> None:
    """publish_default.py finds the models/codec_* directory equal to the export's codec copy by itself."""
    import importlib.util
    import json
    import shutil

    export = tmp_path / "export"
    shutil.copytree(DEFAULT_MODEL_DIR, export)
    shutil.copytree(ROOT / "models" / "codec_rvq16k_v3", export / "codec")
    config = json.loads((export / "config.json").read_text())
    config["metadata"]["codec"] = "codec"
    (export / "config.json").write_text(json.dumps(config))
    spec = importlib.util.spec_from_file_location("publish_default", ROOT / "scripts" / "publish_default.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # scripts/ is not a package
    assert script.main(["--export", str(export), "--out", str(tmp_path / "published")]) == 0
    meta = json.loads((tmp_path / "published" / "config.json").read_text())["metadata"]
    referenced = (tmp_path / "published" / meta["codec"]).resolve()
    assert referenced == (ROOT / "models" / "codec_rvq16k_v3").resolve()
    assert not (tmp_path / "published" / "codec").exists()  # referenced, not copied
    assert (tmp_path / "published" / "house_voices.safetensors").is_file()  # the bank travels with it
    assert script.main(["--export", str(export), "--out", str(tmp_path / "republished"),
                        "--decode", "ar_voice=prompt", "--decode", "temperature=0.5"]) == 0
    decode = json.loads((tmp_path / "republished" / "config.json").read_text())["metadata"]["decode"]
    assert decode["ar_voice"] == "prompt" and decode["temperature"] == 0.5
