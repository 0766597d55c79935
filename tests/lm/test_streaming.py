"""Streaming synthesis (lm/inference/streaming.py) against one-shot `synthesize` on tiny exported models.

The stated tolerances (the module docstring of lm/inference/streaming.py):
- with the NAR waiting for each whole sentence (`nar_lookahead_seconds=None`), and for models without a NAR,
  the streamed waveform equals the one-shot waveform for the same seed within 1e-4;
- with the chunked NAR (the default), codebook 1 equals the one-shot codes, the waveform equals one decode
  of the streamed codes within 1e-4 (seamless joins), and codebooks 2..Q follow the NAR's shorter window.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from suite_helpers import SPEECH, build_tiny_export

from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from lm.inference.generate import generate
from lm.inference.stream_pieces import chunk_end
from lm.inference.streaming import AudioChunk, StreamConfig, decoder_context
from lm.inference.synthesis_types import SynthesisError
from lm.inference.synthesizer import Synthesizer

ROOT = Path(__file__).resolve().parents[2]
PROMPT = SPEECH / "ljspeech-sample" / "LJ001-0002.wav"  # 1.9 s
PROMPT_TEXT = "in being comparatively modern."
TEXT = "The first sentence is here. A second one follows it!"
EXACT = StreamConfig(first_chunk_seconds=0.1, nar_lookahead_seconds=None)  # several chunks a sentence
CHUNKED = StreamConfig(first_chunk_seconds=0.1, nar_lookahead_seconds=0.1)
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/lm/conftest.py


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("stream") / "export")


@pytest.fixture(scope="module")
def synth(export_dir) -> Synthesizer:
    return Synthesizer.from_pretrained(export_dir, max_seconds=0.6)


@pytest.fixture(scope="module")
def prompt() -> tuple[np.ndarray, int]:
    wav, rate = sf.read(PROMPT, dtype="float32")
    return wav, rate


def joined(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([c.wav for c in chunks])


def piece_codes(chunks: list[AudioChunk], piece: int) -> torch.Tensor:
    return torch.cat([c.codes for c in chunks if c.piece == piece], dim=-1)


def one_shot_codes(synth: Synthesizer, text: str, voice, seed: int, **decode) -> list[torch.Tensor]:
    """Every piece's codes as `synthesize` makes them: one generator, the pieces one after another."""
    cfg = synth.defaults.updated(decode)
    rows, _ = synth.plan(text, voice, cfg)
    generator = torch.Generator().manual_seed(seed)
    codes = []
    for row in rows:
        sampling, requests = synth.batch_inputs([row])
        out = generate(synth.model, requests, sampling, generator)
        codes.append(out.codes[0, :, :int(out.frame_lengths[0])])
    return codes


def check_structure(chunks: list[AudioChunk], pieces: int) -> None:
    assert [c.piece for c in chunks] == sorted(c.piece for c in chunks)
    assert {c.piece for c in chunks} == set(range(pieces))
    assert len(chunks) > pieces  # sentences come out in several chunks, not whole
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert sum(c.last_in_piece for c in chunks) == pieces
    assert [c.pause_samples > 0 for c in chunks if c.first_frame == 0] == [False] + [True] * (pieces - 1)


@pytest.mark.parametrize("prompt_text", [None, PROMPT_TEXT], ids=["speaker-prompt", "continuation"])
def test_stream_with_whole_sentence_nar_equals_the_one_shot_waveform(synth, prompt, prompt_text) -> None:
    """Sampled AR (temperature 0.8), two sentences, both modes: same seed, same audio, sample for sample."""
    kw = {"seed": 11, "temperature": 0.8, "prompt_text": prompt_text}
    one_shot = synth.synthesize(TEXT, *prompt, **kw)
    chunks = list(synth.stream(TEXT, *prompt, stream_config=EXACT, **kw))
    check_structure(chunks, len(one_shot.pieces))
    streamed = joined(chunks)
    assert streamed.shape == one_shot.wav.shape
    np.testing.assert_allclose(streamed, one_shot.wav, rtol=0, atol=TOLERANCE)
    assert [c.text for c in chunks if c.first_frame == 0] == one_shot.pieces
    assert chunks[0].seed == 11 and chunks[0].sample_rate == one_shot.sample_rate


@pytest.mark.parametrize("prompt_text", [None, PROMPT_TEXT], ids=["speaker-prompt", "continuation"])
def test_a_whole_sentence_stream_keeps_the_best_of_n_as_synthesize_does(synth, prompt, prompt_text) -> None:
    """With the NAR waiting for each whole sentence nothing is sent before a reading is finished, so best of
    N applies (the server's whole-file responses): one chunk a piece, the reading `synthesize` keeps."""
    kw = {"seed": 5, "temperature": 0.9, "prompt_text": prompt_text, "candidates": 3}
    one_shot = synth.synthesize(TEXT, *prompt, **kw)
    assert one_shot.candidates == 3 and len(one_shot.piece_phone_errors) == len(one_shot.pieces)
    chunks = list(synth.stream(TEXT, *prompt, stream_config=EXACT, **kw))
    assert [c.piece for c in chunks] == list(range(len(one_shot.pieces)))  # the kept reading, whole
    assert all(c.last_in_piece for c in chunks) and [c.last for c in chunks][-1]
    assert [c.codes.shape[-1] for c in chunks] == one_shot.piece_frames
    assert [c.pause_samples > 0 for c in chunks] == [False] + [True] * (len(chunks) - 1)
    np.testing.assert_allclose(joined(chunks), one_shot.wav, rtol=0, atol=TOLERANCE)
    # one reading (candidates 1) is another draw; a chunked stream sends audio early and reads one too
    single = synth.synthesize(TEXT, *prompt, **{**kw, "candidates": 1})
    assert not np.array_equal(single.wav, one_shot.wav)
    chunked = list(synth.stream(TEXT, *prompt, stream_config=CHUNKED, **kw))
    assert len(chunked) > len(chunks)
    assert torch.equal(piece_codes(chunked, 0)[0], piece_codes(list(synth.stream(
        TEXT, *prompt, stream_config=CHUNKED, **{**kw, "candidates": 1})), 0)[0])


def test_chunked_nar_keeps_codebook_one_and_seamless_joins(synth, prompt) -> None:
    voice = synth.encode_voice(*prompt)
    chunks = list(synth.stream(TEXT, voice=voice, seed=5, temperature=0.8, stream_config=CHUNKED))
    reference = one_shot_codes(synth, TEXT, voice, seed=5, temperature=0.8)
    check_structure(chunks, len(reference))
    gap = chunks[0].pause_samples or int(round(synth.defaults.pause_seconds * synth.sample_rate))
    whole = []
    for piece, expected in enumerate(reference):
        codes = piece_codes(chunks, piece)
        assert torch.equal(codes[0], expected[0])  # the AR's codebook: identical
        decoded = synth.codec.decode(codes[None])[0, 0].numpy()  # one decode of the streamed codes
        whole += [np.zeros(gap, dtype=np.float32), decoded] if piece else [decoded]
    np.testing.assert_allclose(joined(chunks), np.clip(np.concatenate(whole), -1, 1), rtol=0, atol=TOLERANCE)
    # the chunk schedule: 0.1 s (8 frames at 75 Hz), then double
    first_piece = [c for c in chunks if c.piece == 0]
    assert [c.first_frame for c in first_piece[:3]] == [0, 8, 24]


def test_models_without_a_nar_stream_exactly_while_the_ar_runs(tmp_path, prompt) -> None:
    """ar_codebooks = num_codebooks = 2 (the AR's delayed codebook, no NAR): chunked as the AR goes, and
    still the one-shot waveform."""
    synth = Synthesizer.from_pretrained(build_tiny_export(tmp_path / "export", num_codebooks=2,
                                                          ar_codebooks=2), max_seconds=0.6)
    assert synth.model.nar is None
    one_shot = synth.synthesize(TEXT, *prompt, seed=2, temperature=0.8)
    chunks = list(synth.stream(TEXT, *prompt, seed=2, temperature=0.8, stream_config=CHUNKED))
    check_structure(chunks, len(one_shot.pieces))
    np.testing.assert_allclose(joined(chunks), one_shot.wav, rtol=0, atol=TOLERANCE)


def test_a_phone_aligned_model_streams(tmp_path, prompt) -> None:
    synth = Synthesizer.from_pretrained(build_tiny_export(tmp_path / "export", alignment="phoneme",
                                                          num_codebooks=4), max_seconds=0.6)
    text = "Two words. And three more."
    one_shot = synth.synthesize(text, *prompt, seed=4, temperature=0.8)
    for config in (EXACT, CHUNKED):
        chunks = list(synth.stream(text, *prompt, seed=4, temperature=0.8, stream_config=config))
        assert [c.text for c in chunks if c.first_frame == 0] == one_shot.pieces
        streamed = joined(chunks)
        assert streamed.shape == one_shot.wav.shape
        if config is EXACT:
            np.testing.assert_allclose(streamed, one_shot.wav, rtol=0, atol=TOLERANCE)


def test_closing_the_stream_cancels_the_rest(synth, prompt) -> None:
    text = "One sentence comes first. Two sentences here, and then a third. Three is the last one here."
    stream = synth.stream(text, *prompt, seed=1, stream_config=CHUNKED)
    first = next(stream)
    assert first.piece == 0 and not first.last
    stream.close()  # joins the worker: it stops at its next AR step
    assert not [t for t in threading.enumerate() if t.name == "stream"]


def test_bad_input_fails_at_the_call_not_in_the_worker(synth, prompt) -> None:
    with pytest.raises(SynthesisError, match="empty"):
        synth.stream("   ", *prompt)
    with pytest.raises(SynthesisError, match="needs a voice"):
        synth.stream("Text.")
    with pytest.raises(SynthesisError, match="first_chunk_seconds"):
        synth.stream("Text.", *prompt, stream_config=StreamConfig(first_chunk_seconds=0))


def test_chunks_double_up_to_the_largest() -> None:
    assert [chunk_end(k, 3, 10) for k in range(5)] == [3, 9, 19, 29, 39]


def test_decoder_context_makes_windowed_decoding_equal_a_whole_decode(tmp_path: Path) -> None:
    """A non-causal codec (the spectral RVQ decoder: convolutions on both sides) needs codes after a chunk
    too; with the measured context, decoding windows gives the samples of one whole decode."""
    torch.manual_seed(0)
    config = RVQCodecConfig(architecture="spectral", num_codebooks=2, codebook_size=64, spectral_dim=32,
                            decoder_layers=2, dimension=16, kmeans_init=False)
    codec = RVQCodec(config).eval()
    left, right = decoder_context(codec)
    assert left > 0 and right > 0
    codes = torch.randint(0, 64, (1, 2, 60), generator=torch.Generator().manual_seed(1))
    whole = codec.decode(codes)[0, 0]
    hop, pieces = codec.hop_length, []
    for start in range(0, 60, 15):
        low, high = max(0, start - left), min(60, start + 15 + right)
        pieces.append(codec.decode(codes[..., low:high])[0, 0][(start - low) * hop:(start + 15 - low) * hop])
    torch.testing.assert_close(torch.cat(pieces), whole, rtol=0, atol=1e-5)


def test_generate_script_streams_to_its_wav_and_reports_the_first_audio(export_dir, synth, prompt, tmp_path,
                                                                      capsys) -> None:
    spec = importlib.util.spec_from_file_location("generate_script", ROOT / "scripts" / "generate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "streamed.wav"
    assert script.main(["--checkpoint", str(export_dir), "--prompt-audio", str(PROMPT), "--text", TEXT,
                        "--out", str(out), "--seed", "3", "--max-seconds", "0.6", "--threads", "1",
                        "--stream", "--speaker-prompt"]) == 0  # the mode of the one-shot call below
    printed = capsys.readouterr().out
    assert re.search(r"^first audio  \d+\.\d+ s \(whole utterance \d+\.\d+ s\)$", printed, re.M), printed
    written, rate = sf.read(out, dtype="float32")
    one_shot = synth.synthesize(TEXT, *prompt, seed=3)
    assert rate == synth.sample_rate and written.shape == one_shot.wav.shape
