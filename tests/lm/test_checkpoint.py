"""safetensors + JSON export: round trip, no pickle, clear errors, HF LlamaModel export."""

from __future__ import annotations

import json

import pytest
import torch

from lm.checkpoint import CONFIG_FILE, MODEL_FILE, load_model, read_config, save_ar_as_hf, save_model
from lm.model.config import ModelConfig, get_preset


def test_round_trip_gives_identical_outputs(tmp_path, tiny_model, tiny_config, make_batch):
    tiny_model.eval()
    save_model(tiny_model, tiny_config, tmp_path, metadata={"codec": "encodec_24khz@6"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, MODEL_FILE]
    loaded = load_model(tmp_path)
    assert not loaded.training and loaded.config == tiny_config
    assert read_config(tmp_path) == (tiny_config, {"codec": "encodec_24khz@6"})
    batch = tiny_model.build_batch(make_batch(tiny_config, [4, 2], [6, 3], [5, 2]), continuation_prob=0.0)
    a, b = tiny_model(batch), loaded(batch)
    assert torch.equal(a.ar_logits, b.ar_logits) and torch.equal(a.nar_logits, b.nar_logits)
    half = load_model(tmp_path, dtype=torch.bfloat16)
    assert half.ar.code_head.weight.dtype == torch.bfloat16


def test_config_dict_round_trip_and_unknown_keys():
    cfg = get_preset("small", text_vocab_size=2000)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "hidden": 3})
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="not divisible"):
        ModelConfig(ar_hidden_size=100, ar_num_heads=3)


def test_pickle_checkpoints_are_refused(tmp_path, tiny_model, tiny_config):
    save_model(tiny_model, tiny_config, tmp_path)
    (tmp_path / MODEL_FILE).unlink()
    torch.save(tiny_model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"refusing pickle files \['pytorch_model.bin'\]"):
        load_model(tmp_path)


def test_bad_exports_name_the_file(tmp_path, tiny_model, tiny_config):
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_model(tmp_path)
    save_model(tiny_model, tiny_config, tmp_path)
    (tmp_path / MODEL_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"{MODEL_FILE}: cannot read safetensors"):
        load_model(tmp_path)
    # weights of another shape / config
    save_model(tiny_model, tiny_config, tmp_path)
    payload = json.loads((tmp_path / CONFIG_FILE).read_text())
    payload["model"]["ar_num_layers"] = 3
    (tmp_path / CONFIG_FILE).write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="does not match the config"):
        load_model(tmp_path)
    payload["format"] = "something-else"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="format"):
        load_model(tmp_path)


def test_ar_exports_as_a_stock_hf_llama(tmp_path, tiny_model):
    from transformers import LlamaModel

    tiny_model.eval()
    save_ar_as_hf(tiny_model, tmp_path)
    hf = LlamaModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(16, tiny_model.vocab.size, (1, 9))
    torch.testing.assert_close(hf(ids).last_hidden_state, tiny_model.ar.model(ids).last_hidden_state)
