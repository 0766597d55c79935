"""The inference API and generate.py on a tiny exported model (random weights, real EnCodec architecture).

The model is untrained, so these tests check the plumbing (shapes, rates, lengths, trimming, determinism,
batching, errors), never how the audio sounds. To make rows stop through the real `<eos>` path at a known
frame, some tests give the code head a large `<eos>` bias and forbid `<eos>` before
`min_seconds_per_token * text_length` (0.04 s = 3 frames a token at 75 Hz): a greedy row then ends exactly
there.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from suite_helpers import build_tiny_export

from codec.audio import resample
from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from data_pipeline.text.tokenizer import TextTokenizer
from lm.inference.phone_alignment import text_phone_ids
from lm.inference.sentences import split_sentences
from lm.inference.synthesis_types import SynthesisError, SynthesisRequest
from lm.inference.synthesizer import Synthesizer
from lm.model.config import get_preset
from lm.model.model import TTSModel
from lm.training.export import export_inference_dir

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech"
PROMPT = SPEECH / "ljspeech-sample" / "LJ001-0002.wav"  # 1.9 s, 22.05 kHz mono
CODEC_SPEC = "encodec_24khz:random"
FAST = {"max_seconds": 0.4}  # an untrained model never says <eos>: keep its rows short


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/lm/conftest.py


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("runs") / "export")


@pytest.fixture(scope="module")
def synth(export_dir) -> Synthesizer:
    return Synthesizer.from_pretrained(export_dir)


@pytest.fixture(scope="module")
def eos_synth(export_dir) -> Synthesizer:
    """The same model with a code head that always prefers <eos> once it is allowed."""
    s = Synthesizer.from_pretrained(export_dir, temperature=0.0, min_seconds_per_token=0.04)
    head = s.model.ar.code_head
    bias = torch.zeros(head.out_features)
    bias[s.model.vocab.eos_class] = 1e4
    head.bias = torch.nn.Parameter(bias, requires_grad=False)
    return s


@pytest.fixture(scope="module")
def prompt() -> tuple[np.ndarray, int]:
    wav, rate = sf.read(PROMPT, dtype="float32")
    return wav, rate


def hop(s: Synthesizer) -> int:
    return s.codec.hop_length


def expected_length(s: Synthesizer, frames: list[int], pause_seconds: float) -> int:
    return sum(frames) * hop(s) + (len(frames) - 1) * int(round(pause_seconds * s.sample_rate))


# ---- the API -----------------------------------------------------------------------------------------------
def test_long_text_is_split_and_each_piece_stops_at_eos_without_prompt_audio(eos_synth, prompt) -> None:
    text = "The first sentence is here. A second one follows it! Is this the third?"
    result = eos_synth.synthesize(text, *prompt, seed=0)
    assert result.pieces == split_sentences(text) and len(result.pieces) == 3
    lengths = [len(eos_synth.tokenizer.encode(p)) for p in result.pieces]
    assert result.piece_frames == [3 * n for n in lengths]  # stopped by <eos> exactly where it became legal
    assert result.hit_length_guard == [False, False, False]
    # generated frames + pauses, nothing else: no prompt audio in the output
    pause = eos_synth.defaults.pause_seconds
    assert len(result.wav) == expected_length(eos_synth, result.piece_frames, pause)
    assert result.sample_rate == 24000 and result.wav.dtype == np.float32 and np.isfinite(result.wav).all()
    assert result.rtf > 0 and 0 < result.first_audio_seconds <= result.elapsed_seconds


def test_continuation_mode_cuts_the_decoded_prompt_context(eos_synth, prompt) -> None:
    prompt_text = "in being comparatively modern."
    result = eos_synth.synthesize("A short target.", *prompt, prompt_text=prompt_text, seed=0)
    assert result.mode == "continuation"
    assert result.piece_frames == [3 * len(eos_synth.tokenizer.encode("A short target."))]
    assert len(result.wav) == result.piece_frames[0] * hop(eos_synth)  # the 1 s of decoded prompt is gone


def test_stereo_44k_prompt_is_down_mixed_and_resampled(synth, prompt) -> None:
    mono, rate = prompt
    mono44 = resample(torch.from_numpy(mono), rate, 44100).numpy()
    stereo = np.stack([mono44, mono44])  # [C, T]
    codes = synth._encode_prompts([SynthesisRequest("x", w, 44100) for w in (mono44, stereo, stereo.T)],
                                  [synth.defaults] * 3)
    assert codes[0].shape[0] == synth.model.config.num_codebooks
    assert codes[0].shape[1] == math.ceil(len(mono44) * 24000 / 44100 / hop(synth))
    assert torch.equal(codes[0], codes[1]) and torch.equal(codes[0], codes[2])  # [C, T] and [T, C] alike
    # channels are averaged, not "take channel 0": a voice on the right channel only is half as loud, not lost
    right_only, half = synth._encode_prompts(
        [SynthesisRequest("x", w, 44100) for w in (np.stack([np.zeros_like(mono44), mono44]), mono44 * 0.5)],
        [synth.defaults] * 2)
    assert torch.equal(right_only, half)
    result = synth.synthesize("Stereo prompt.", torch.from_numpy(stereo), 44100, seed=3, **FAST)
    assert result.sample_rate == 24000 and np.isfinite(result.wav).all()
    assert len(result.wav) == result.piece_frames[0] * hop(synth) > 0


def test_prompt_level_option_encodes_every_prompt_at_one_level(synth, prompt) -> None:
    """A prompt 12 dB too quiet and the same prompt as given encode alike once both are scaled to one level;
    without the option the quiet one gives other codes (the codec's first codebook carries the level)."""
    mono, rate = prompt
    quiet = mono * 10 ** (-12 / 20)
    as_given = synth._encode_prompts([SynthesisRequest("x", w, rate) for w in (mono, quiet)],
                                     [synth.defaults] * 2)
    assert not torch.equal(as_given[0], as_given[1])
    levelled = synth.defaults.updated({"prompt_level_db": -20.0})
    loud, soft = synth._encode_prompts([SynthesisRequest("x", w, rate) for w in (mono, quiet)],
                                       [levelled] * 2)
    assert (loud == soft).float().mean() > 0.95  # float rounding of the two gains may flip a rare code
    with pytest.raises(SynthesisError, match="prompt_level_db"):
        synth.synthesize("Text.", *prompt, prompt_level_db=6.0)


def test_same_seed_same_wav_other_seed_other_wav(synth, prompt) -> None:
    a = synth.synthesize("Seeds make sampling reproducible.", *prompt, seed=7, **FAST)
    b = synth.synthesize("Seeds make sampling reproducible.", *prompt, seed=7, **FAST)
    c = synth.synthesize("Seeds make sampling reproducible.", *prompt, seed=8, **FAST)
    assert a.seed == 7 and np.array_equal(a.wav, b.wav)
    assert not np.array_equal(a.wav, c.wav)
    drawn = synth.synthesize("Seeds make sampling reproducible.", *prompt, **FAST)
    again = synth.synthesize("Seeds make sampling reproducible.", *prompt, seed=drawn.seed, **FAST)
    assert np.array_equal(drawn.wav, again.wav)  # the reported seed reproduces an unseeded call


def test_batch_rows_stop_independently_and_match_single_requests(eos_synth, prompt) -> None:
    texts = ["Hi.", "A somewhat longer request with more words.", "Two sentences here. And the second."]
    requests = [dict(text=t, prompt_wav=prompt[0], prompt_sample_rate=prompt[1], seed=i)
                for i, t in enumerate(texts)]
    requests[1]["prompt_text"] = "in being comparatively modern."
    batch = eos_synth.synthesize_batch(requests)
    assert len(batch) == 3
    for req, got in zip(requests, batch, strict=True):
        alone = eos_synth.synthesize(**req)
        assert got.pieces == alone.pieces and got.piece_frames == alone.piece_frames
        assert got.piece_frames == [3 * len(eos_synth.tokenizer.encode(p)) for p in got.pieces]
        assert not any(got.hit_length_guard)
        np.testing.assert_allclose(got.wav, alone.wav, atol=1e-5)
    assert len({len(r.wav) for r in batch}) == 3  # different lengths, each its own
    assert batch[1].mode == "continuation" and batch[0].mode == "speaker-prompt"


def test_length_guard_and_max_seconds_cap_an_endless_row(synth, prompt) -> None:
    result = synth.synthesize("An untrained model never stops.", *prompt, seed=1, max_seconds=0.2)
    assert result.hit_length_guard == [True]
    assert result.piece_frames == [math.ceil(0.2 * synth.codec.frame_rate)]


def test_decode_config_and_bad_inputs(synth, prompt, export_dir) -> None:
    cfg = synth.decode_config()
    assert {"temperature", "top_k", "top_p", "repetition_penalty", "max_seconds"} <= set(cfg)
    with pytest.raises(TypeError, match="unknown decode option"):
        synth.synthesize("Text.", *prompt, temprature=0.5)
    with pytest.raises(SynthesisError, match="empty"):
        synth.synthesize("  ", *prompt)
    with pytest.raises(SynthesisError, match="at least"):
        synth.synthesize("Text.", prompt[0][:100], prompt[1])
    with pytest.raises(SynthesisError, match="NaN"):
        synth.synthesize("Text.", np.full(24000, np.nan, dtype=np.float32), 24000)
    with pytest.raises(SynthesisError, match="top_p"):
        synth.synthesize("Text.", *prompt, top_p=1.5)
    with pytest.raises(SynthesisError, match="does not exist"):
        Synthesizer.from_pretrained(export_dir / "nope")
    with pytest.raises(SynthesisError, match="not an export directory"):
        Synthesizer.from_pretrained(export_dir.parent)
    with pytest.raises(SynthesisError, match="adapter directory .*nope does not exist"):
        Synthesizer.from_pretrained(export_dir, adapter=export_dir / "nope")


def test_broken_exports_fail_with_the_file_named(export_dir, tmp_path) -> None:
    broken = tmp_path / "export"
    shutil.copytree(export_dir, broken)
    (broken / "tokenizer.model").unlink()
    with pytest.raises(SynthesisError, match=r"text tokenizer .*tokenizer\.model.* is missing"):
        Synthesizer.from_pretrained(broken)
    shutil.copy(export_dir / "tokenizer.model", broken / "tokenizer.model")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(SynthesisError, match=r"cannot load the export .*config\.json: not valid JSON"):
        Synthesizer.from_pretrained(broken)


def test_export_with_its_own_codec_directory_at_another_rate(tmp_path, prompt) -> None:
    """A local codec (16 kHz, 50 frames/s, 4 x 64 codes) copied into export/codec/: nothing assumes 24 kHz."""
    codec = RVQCodec(RVQCodecConfig(architecture="spectral", sample_rate=16000, num_codebooks=4,
                                    codebook_size=64, spectral_dim=32, encoder_layers=1, decoder_layers=1,
                                    dimension=16, kmeans_init=False))
    codec.save_pretrained(tmp_path / "codec-ckpt")
    export = build_tiny_export(tmp_path / "export", str(tmp_path / "codec-ckpt"), num_codebooks=4,
                               codebook_size=64)
    assert (export / "codec" / "config.json").is_file()
    s = Synthesizer.from_pretrained(export, temperature=0.0)
    assert s.sample_rate == 16000 and s.codec.frame_rate == 50
    stereo = np.stack([prompt[0], prompt[0]])
    result = s.synthesize("Another sample rate here. And two pieces now.", stereo, prompt[1],
                          prompt_text="in being comparatively modern.", max_seconds=0.3)
    assert result.sample_rate == 16000 and result.piece_frames == [15, 15] and np.isfinite(result.wav).all()
    assert len(result.wav) == 30 * 320 + int(0.2 * 16000)


def test_an_export_whose_ar_predicts_two_codebooks_synthesises_in_both_modes(tmp_path, prompt) -> None:
    """ar_codebooks=2 through the whole API: the AR's delayed codebook, the NAR's codebooks 3..8, codec."""
    s = Synthesizer.from_pretrained(build_tiny_export(tmp_path / "export", ar_codebooks=2), temperature=0.0)
    assert s.model.config.ar_codebooks == 2
    for prompt_text in (None, "in being comparatively modern."):
        result = s.synthesize("Two codebooks a step.", *prompt, prompt_text=prompt_text, seed=0, **FAST)
        assert result.piece_frames == [30]  # the untrained model runs to the max_seconds cap (0.4 s at 75 Hz)
        assert len(result.wav) == 30 * hop(s) and np.isfinite(result.wav).all() and result.wav.std() > 0
        again = s.synthesize("Two codebooks a step.", *prompt, prompt_text=prompt_text, seed=0, **FAST)
        np.testing.assert_array_equal(again.wav, result.wav)


def test_a_phone_aligned_export_walks_its_phones_in_both_modes(tmp_path, prompt) -> None:
    """alignment=phoneme through the whole API: G2P phones for each piece, the prompt force-aligned in
    continuation mode, the pointer ending each piece (an untrained advance head, greedy: p ~ 0.5, so the
    max_phone_frames guard moves it on), the phone-aware NAR, the codec."""
    s = Synthesizer.from_pretrained(build_tiny_export(tmp_path / "export", alignment="phoneme"),
                                    temperature=0.0, max_seconds=10.0)
    assert s.phone_aligned
    text = "Two words. And three more."
    for prompt_text in (None, "in being comparatively modern."):
        result = s.synthesize(text, *prompt, prompt_text=prompt_text, seed=0)
        phones = [len(text_phone_ids(piece)) for piece in result.pieces]
        # every phone lasts 1..max_phone_frames frames, and the row ends with its last phone
        assert all(n <= f <= n * 40 for n, f in zip(phones, result.piece_frames, strict=True)), result
        assert not any(result.hit_length_guard)
        assert np.isfinite(result.wav).all() and result.wav.std() > 0
    with pytest.raises(SynthesisError, match="does not fit its transcript"):
        s.synthesize(text, *prompt, prompt_text="A completely different sentence about seven green apples.")


def test_engine_durations_set_every_pieces_length(tmp_path, prompt) -> None:
    """phone_durations="engine": each piece lasts exactly flite's frames for its phones, at flite's pace in
    speaker-prompt mode and at the aligned prompt speaker's pace in continuation mode, divided by `speed`;
    a model without phones refuses any speed but 1."""
    from lm.inference.phone_alignment import prompt_frame_phones, prompt_seconds_per_phone, text_phone_frames

    s = Synthesizer.from_pretrained(build_tiny_export(tmp_path / "export", alignment="phoneme"),
                                    temperature=0.0, max_seconds=10.0, phone_durations="engine")
    text, prompt_text = "Two words. And three more.", "in being comparatively modern."
    rate = s.codec.frame_rate
    for mode_text in (None, prompt_text):
        result = s.synthesize(text, *prompt, prompt_text=mode_text, seed=0)
        pace = None
        if mode_text:
            codes = s.encode_voice(*prompt, prompt_text=mode_text).codes
            phones = prompt_frame_phones(prompt[0], prompt[1], mode_text, codes.shape[-1])
            pace = prompt_seconds_per_phone(phones, mode_text, rate)
            assert pace is not None
        want = [int(text_phone_frames(piece, rate, pace)[1].sum()) for piece in result.pieces]
        assert result.piece_frames == want and not any(result.hit_length_guard)
        fast = s.synthesize(text, *prompt, prompt_text=mode_text, seed=0, speed=2.0)
        assert fast.piece_frames == [int(text_phone_frames(piece, rate, pace, speed=2.0)[1].sum())
                                     for piece in fast.pieces]
        assert sum(fast.piece_frames) < 0.6 * sum(want)
    plain = Synthesizer.from_pretrained(build_tiny_export(tmp_path / "plain"), temperature=0.0)
    with pytest.raises(SynthesisError, match="not phone-aligned .* only speed 1.0"):
        plain.synthesize(text, *prompt, speed=2.0, phone_durations="engine")


# ---- generate.py -------------------------------------------------------------------------------------------
def load_generate_script():
    spec = importlib.util.spec_from_file_location("generate_script", ROOT / "scripts" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_script_errors_are_clear(export_dir, tmp_path, capsys, monkeypatch) -> None:
    script = load_generate_script()
    out = tmp_path / "out.wav"
    assert script.main(["--prompt-audio", str(tmp_path / "missing.wav"), "--text", "Hi.", "--out", str(out),
                        "--checkpoint", str(export_dir)]) == 2
    assert f"prompt audio not found: {tmp_path / 'missing.wav'}" in capsys.readouterr().err
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    assert script.main(["--prompt-audio", str(junk), "--text", "Hi.", "--out", str(out),
                        "--checkpoint", str(export_dir)]) == 2
    assert f"cannot read prompt audio {junk}" in capsys.readouterr().err
    assert script.main(["--prompt-audio", str(PROMPT), "--text", "Hi.", "--out", str(out),
                        "--checkpoint", str(tmp_path / "no-export")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert script.main(["--prompt-audio", str(PROMPT), "--text", "Hi.", "--out", str(out),
                        "--checkpoint", str(export_dir), "--speed", "1.5"]) == 2
    assert "not phone-aligned" in capsys.readouterr().err  # this export has no phones to time
    default = tmp_path / "models" / "default"
    monkeypatch.setattr("lm.inference.export_dir.DEFAULT_MODEL_DIR", default)
    monkeypatch.setattr(script, "DEFAULT_MODEL_DIR", default)
    assert script.main(["--prompt-audio", str(PROMPT), "--text", "Hi.", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"no default model at {default}" in err and "--checkpoint" in err
    assert not out.exists()


def test_generate_script_refuses_an_empty_prompt_or_text(export_dir, tmp_path, capsys) -> None:
    script = load_generate_script()
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 24000, subtype="PCM_16")  # a valid wav of 0 samples
    out = tmp_path / "out.wav"
    assert script.main(["--prompt-audio", str(empty), "--text", "Hi.", "--out", str(out),
                        "--checkpoint", str(export_dir)]) == 2
    assert capsys.readouterr().err.strip() == f"error: prompt audio {empty} is empty"
    assert script.main(["--prompt-audio", str(PROMPT), "--text", "   ", "--out", str(out),
                        "--checkpoint", str(export_dir)]) == 2
    assert "the text to synthesize is empty" in capsys.readouterr().err
    assert not out.exists()


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_default_model_is_what_generate_uses_without_checkpoint(tmp_path, capsys,
                                                                          monkeypatch) -> None:
    """publish_default.py on an export that carries a copy of a codec the repository already holds: fp16
    weights, the codec referenced instead of copied; generate.py without --checkpoint then loads it from the
    default path (here a temporary one) and says exactly what --checkpoint <that path> says."""
    repo = tmp_path / "repo"
    codec_dir = repo / "models" / "codec_tiny"
    RVQCodec(RVQCodecConfig(architecture="spectral", sample_rate=16000, num_codebooks=4, codebook_size=64,
                            spectral_dim=32, encoder_layers=1, decoder_layers=1, dimension=16,
                            kmeans_init=False)).save_pretrained(codec_dir)
    export = build_tiny_export(tmp_path / "run" / "export", str(codec_dir), num_codebooks=4, codebook_size=64)
    assert (export / "codec" / "config.json").is_file()  # the export carries its own copy
    default = repo / "models" / "default"
    publish = load_script("publish_default")
    with pytest.raises(SystemExit):  # an unknown decoding option is refused before anything is written
        publish.main(["--export", str(export), "--out", str(default), "--decode", "temprature=0.5"])
    assert not default.exists()
    assert publish.main(["--export", str(export), "--out", str(default), "--codec-dir", str(codec_dir),
                         "--decode", "temperature=0.5"]) == 0
    assert f"published {default}" in capsys.readouterr().out
    meta = json.loads((default / "config.json").read_text())["metadata"]
    assert meta["codec"] == "../codec_tiny" and not (default / "codec").exists()
    assert meta["decode"]["temperature"] == 0.5  # the decoding default published with the model ...
    assert Synthesizer.from_pretrained(default).defaults.temperature == 0.5  # ... is the one it loads with
    weights = load_file(default / "model.safetensors")
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    for name, value in load_file(export / "model.safetensors").items():  # the export's weights, in fp16
        torch.testing.assert_close(weights[name].float(), value, rtol=1e-3, atol=1e-4)

    script = load_generate_script()
    monkeypatch.setattr("lm.inference.export_dir.DEFAULT_MODEL_DIR", default)
    monkeypatch.setattr(script, "DEFAULT_MODEL_DIR", default)
    common = ["--prompt-audio", str(PROMPT), "--text", "The default voice.", "--seed", "3",
              "--max-seconds", "0.3", "--threads", "1"]
    assert script.main([*common, "--out", str(tmp_path / "default.wav")]) == 0
    assert script.main([*common, "--checkpoint", str(default), "--out", str(tmp_path / "explicit.wav")]) == 0
    by_default, rate = sf.read(tmp_path / "default.wav", dtype="int16")
    explicit, _ = sf.read(tmp_path / "explicit.wav", dtype="int16")
    assert rate == 16000 and len(by_default) == 15 * 320  # the published codec: 16 kHz, 50 frames/s
    np.testing.assert_array_equal(by_default, explicit)


@pytest.mark.integration
def test_generate_script_end_to_end(export_dir, tmp_path) -> None:
    out = tmp_path / "nested" / "clone.wav"
    cmd = [sys.executable, str(ROOT / "scripts" / "generate.py"), "--checkpoint", str(export_dir),
           "--prompt-audio", str(SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0001.wav"),
           "--text", "Hello there. This is the second sentence.", "--out", str(out), "--seed", "5",
           "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--max-seconds", "0.3",
           "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^RTF \d+\.\d+$", proc.stdout, re.M), proc.stdout
    wav, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and wav.ndim == 1 and np.isfinite(wav).all()
    frames = math.ceil(0.3 * 75)  # two pieces, each capped by --max-seconds
    assert len(wav) == 2 * frames * 320 + int(0.2 * 24000)


def test_export_of_a_training_run_caps_speaker_prompts_at_the_trained_length(tmp_path) -> None:
    """A model trained on 1-3 s speaker prompts gets at most 3 s of a longer prompt by default."""
    from lm.training.config import TrainConfig

    plain = build_tiny_export(tmp_path / "plain")
    trained = TrainConfig()
    trained.data.batching.prompt_max_seconds = 2.5
    tokenizer = plain.with_name(plain.name + "-text.model")
    config = get_preset("tiny", text_vocab_size=TextTokenizer.load(tokenizer).vocab_size)
    export = export_inference_dir(tmp_path / "trained", config, TTSModel(config).state_dict(), tokenizer,
                                  CODEC_SPEC, train_config=trained)
    assert Synthesizer.from_pretrained(export).decode_config()["max_prompt_seconds"] == 2.5
    overridden = Synthesizer.from_pretrained(export, max_prompt_seconds=6)
    assert overridden.decode_config()["max_prompt_seconds"] == 6
    assert Synthesizer.from_pretrained(plain).decode_config()["max_prompt_seconds"] == 15.0
