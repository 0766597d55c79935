"""Codec checkpoints: save_pretrained -> load_codec(dir), safetensors + JSON, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from codec import load_codec
from codec.backends.encodec_codec import EncodecCodec
from codec.base import CONFIG_FILE, WEIGHTS_FILE, Codec


def test_round_trip_gives_identical_codes(codec24, lj_clip, tmp_path) -> None:
    wav, sr = lj_clip
    x = wav[None, :, : sr // 2]
    before = codec24.encode(x, sample_rate=sr).codes
    directory = codec24.save_pretrained(tmp_path / "codec")
    config = json.loads((directory / CONFIG_FILE).read_text())
    assert config["backend"] == "encodec" and config["config"]["num_codebooks"] == 8
    loaded = load_codec(str(directory))
    assert isinstance(loaded, EncodecCodec) and not loaded.training
    assert (loaded.sample_rate, loaded.frame_rate, loaded.num_codebooks) == (24_000, 75.0, 8)
    assert torch.equal(loaded.encode(x, sample_rate=sr).codes, before)
    for book in loaded.model.quantizer.vq.layers:
        assert bool(book._codebook.inited)  # a training-mode forward must not re-run k-means


def test_tiny_round_trip_and_decode(tiny_codec, tmp_path) -> None:
    codes = torch.randint(0, 64, (2, 4, 9), generator=torch.Generator().manual_seed(0))
    loaded = Codec.from_pretrained(tiny_codec.save_pretrained(tmp_path / "tiny"))
    assert torch.equal(loaded.decode(codes), tiny_codec.decode(codes))


def test_mismatched_or_incomplete_checkpoints_are_refused(tiny_codec, tmp_path) -> None:
    directory = tiny_codec.save_pretrained(tmp_path / "tiny")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    meta["config"]["dimension"] = 32
    (directory / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_codec(directory)

    meta["backend"] = "no_such_backend"
    (directory / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown codec backend"):
        load_codec(directory)

    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_codec(directory)


class Payload:
    """Unpickling this creates `marker`: the proof that a loader executed pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def test_pickle_weights_are_not_loaded(tiny_codec, tmp_path) -> None:
    """A torch.save (pickle) file under the safetensors name is rejected, never unpickled."""
    directory = tiny_codec.save_pretrained(tmp_path / "tiny")
    marker = tmp_path / "executed"
    torch.save({**tiny_codec.state_dict(), "evil": Payload(marker)}, directory / WEIGHTS_FILE)
    with pytest.raises(SafetensorError, match="deserializing header"):
        load_codec(directory)
    assert not marker.exists()
    # the payload really is live: an unpickling loader would have run it
    torch.load(directory / WEIGHTS_FILE, weights_only=False)
    assert marker.exists()
