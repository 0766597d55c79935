"""Tokens of two codecs never mix: codec identity, the token folder's codec.json, training's shard check,
and warm starts from a model trained on another codec's tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from codec.identity import codec_identity
from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.token_codec import (
    CodecMismatchError,
    check_one_codec,
    claim_token_folder,
    sample_codec,
)
from data_pipeline.tokens.tokenize import tokenize_shards
from lm.training.run_setup import inspect_token_shards
from lm.training.warm_start import check_init_codec

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech" / "cmu-arctic-sample"


@pytest.fixture(scope="module")
def arctic_raw(tmp_path_factory) -> Path:
    """Two CMU Arctic clips with their transcripts, one clip per raw shard."""
    src = tmp_path_factory.mktemp("arctic2")
    wavs = sorted(SPEECH.glob("*.wav"))[:2]
    for wav in wavs:
        shutil.copy(wav, src / wav.name)
    lines = (SPEECH / "transcripts.tsv").read_text().splitlines()
    (src / "transcripts.tsv").write_text("\n".join([lines[0]] + [
        line for line in lines[1:] if any(line.startswith(w.name) for w in wavs)]) + "\n")
    out = src.parent / "raw"
    summary = ingest(src, out, IngestConfig(shard_max_count=1, workers=0), progress=False)
    assert summary.accepted == 2
    return out


def _edited_copy(src: Path, dst: Path, prefix: str) -> Path:
    """A copy of a codec checkpoint with the first tensor under `prefix` changed."""
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    name = next(k for k in sorted(state) if k.startswith(prefix) and state[k].is_floating_point())
    state[name] = state[name] + 0.5
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_identity_follows_the_encoder_and_codebooks_not_the_decoder(tmp_path, tiny_codec_dir) -> None:
    base = codec_identity(tiny_codec_dir)
    assert base.startswith("sha256:") and codec_identity(tiny_codec_dir) == base  # deterministic
    decoder_tuned = _edited_copy(tiny_codec_dir, tmp_path / "dec", "model.decoder.")
    assert codec_identity(decoder_tuned) == base  # a decoder-only fine-tune keeps the tokens valid
    retrained = _edited_copy(tiny_codec_dir, tmp_path / "enc", "model.encoder.")
    assert codec_identity(retrained) != base
    codebooks = _edited_copy(tiny_codec_dir, tmp_path / "vq", "model.quantizer.vq.layers.0._codebook.embed")
    assert codec_identity(codebooks) != base
    assert codec_identity("encodec_24khz@6") == "encodec_24khz@6"  # a named codec is its own identity


def test_a_token_folder_refuses_a_second_codec(tmp_path, arctic_raw, tiny_codec_dir) -> None:
    out = tmp_path / "tokens"
    tokenize_shards(arctic_raw, out, TokenizeConfig(codec=str(tiny_codec_dir), progress=False))
    recorded = json.loads((out / "codec.json").read_text())
    assert recorded == {"spec": str(tiny_codec_dir), "identity": codec_identity(tiny_codec_dir)}
    other = _edited_copy(tiny_codec_dir, tmp_path / "other", "model.encoder.")
    with pytest.raises(CodecMismatchError, match="Tokens of two codecs must not mix") as err:
        tokenize_shards(arctic_raw, out, TokenizeConfig(codec=str(other), progress=False))
    assert str(other) in str(err.value) and str(tiny_codec_dir) in str(err.value)
    # rerun with the same codec: accepted (it resumes)
    assert claim_token_folder(out, str(tiny_codec_dir)) == recorded["identity"]
    # shards of unknown origin (no codec.json) are refused too
    (out / "codec.json").unlink()
    with pytest.raises(CodecMismatchError, match="which codec made them is"):
        claim_token_folder(out, str(tiny_codec_dir))


def test_training_refuses_shards_of_two_codecs(tmp_path, arctic_raw, tiny_codec_dir) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    tokenize_shards(arctic_raw, a, TokenizeConfig(codec=str(tiny_codec_dir), progress=False))
    other = _edited_copy(tiny_codec_dir, tmp_path / "other", "model.encoder.")
    tokenize_shards(arctic_raw, b, TokenizeConfig(codec=str(other), progress=False))
    urls_a, urls_b = sorted(map(str, a.glob("*.tar"))), sorted(map(str, b.glob("*.tar")))
    assert inspect_token_shards(urls_a).identity == codec_identity(tiny_codec_dir)
    with pytest.raises(CodecMismatchError, match="come from 2 codecs"):
        inspect_token_shards(urls_a + urls_b)
    assert check_one_codec({"x": "c1", "y": "c1"}) == "c1"


def test_samples_from_before_identities_resolve_their_codec_spec(tmp_path, tiny_codec_dir) -> None:
    # an old sample names only its codec path; it trains with new samples of that same checkpoint ...
    new = {"codec": str(tiny_codec_dir), "extra": {"codec_identity": codec_identity(tiny_codec_dir)}}
    legacy = {"codec": str(tiny_codec_dir), "extra": {}}
    assert sample_codec(legacy) == sample_codec(new) == codec_identity(tiny_codec_dir)
    assert check_one_codec({"new.tar": sample_codec(new), "old.tar": sample_codec(legacy)})
    # ... but not with samples of a codec whose encoder differs
    other = _edited_copy(tiny_codec_dir, tmp_path / "other", "model.encoder.")
    with pytest.raises(CodecMismatchError, match="come from 2 codecs"):
        check_one_codec({"new.tar": sample_codec(new), "old.tar": sample_codec({"codec": str(other)})})
    # a named codec with no local checkpoint stays its own identity
    assert sample_codec({"codec": "encodec_24khz@6"}) == "encodec_24khz@6"


def test_a_warm_start_needs_the_codec_its_model_was_trained_on(tmp_path, tiny_codec_dir, monkeypatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copytree(tiny_codec_dir, tmp_path / "codec")
    (model / "config.json").write_text(json.dumps({"format": 1, "version": 1, "model": {},
                                                   "metadata": {"codec": "../codec"}}))
    from lm.training import warm_start

    def fake_read_config(directory):  # the model half of config.json is not what this test is about
        return None, json.loads((Path(directory) / "config.json").read_text())["metadata"]

    monkeypatch.setattr(warm_start, "read_config", fake_read_config)
    check_init_codec(model, codec_identity(tiny_codec_dir), str(tiny_codec_dir))  # same weights: fine
    other = _edited_copy(tiny_codec_dir, tmp_path / "other", "model.encoder.")
    with pytest.raises(CodecMismatchError, match="was trained on tokens of codec"):
        check_init_codec(model, codec_identity(other), str(other))
    # shards from before identities name their codec by path: the model's own codec is accepted
    check_init_codec(model, str(tmp_path / "codec"), str(tmp_path / "codec"))
