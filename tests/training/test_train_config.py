"""Training config: overrides and YAML are checked against the dataclasses; DeepSpeed files hold system
settings only; the schedule; RNG state survives a weights-only round trip."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lm.training.config import (
    ConfigError,
    TrainConfig,
    config_diff,
    config_from_dict,
    load_yaml,
    resolve_config,
)
from lm.training.deepspeed_setup import (
    DeepSpeedConfigError,
    build_ds_config,
    load_ds_config,
    resolve_precision,
)
from lm.training.optimizer import WarmupCosine, param_groups
from lm.training.train_state import rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[2]


def test_overrides_set_typed_values_at_any_depth() -> None:
    cfg = resolve_config(
        flags={"preset": "tiny", "max_steps": 7},
        overrides=["optim.lr=1e-3", "optim.betas=[0.8, 0.9]", "data.val=null", "model.ar_num_layers=3",
                   "data.batching.bucket_ratio=none", "activation_checkpointing=true",
                   "codec=encodec_24khz@6"],
    )
    assert cfg.max_steps == 7
    assert cfg.optim.lr == 1e-3 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.data.val is None and cfg.data.batching.bucket_ratio is None
    assert cfg.model.ar_num_layers == 3 and cfg.model.ar_hidden_size == 64  # the rest stays tiny
    assert cfg.activation_checkpointing is True and cfg.codec == "encodec_24khz@6"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("nonsense=1", "unknown config key 'nonsense'"),
        ("data.batching.max_framez=10", "unknown config key 'data.batching.max_framez'"),
        ("optim.lr=fast", "optim.lr: expected a number"),
        ("max_steps=1.5", "max_steps: expected an integer"),
        ("activation_checkpointing=maybe", "activation_checkpointing: expected true/false"),
        ("optim.betas=[0.9]", "optim.betas: expected 2 values"),
        ("data=3", "data: expected a mapping"),
        ("model.ar_num_heads=5", "not divisible"),
        ("preset=huge", "unknown model preset 'huge'"),
        ("max_steps=0", "max_steps must be >= 1"),
        ("precision=fp16", "precision must be auto, bf16 or fp32"),
        ("data.code_noise=1.0", "data.code_noise must be in"),
        ("data.self_feed=1.0", "data.self_feed must be in"),
        ("data.self_feed_temperature=-1", "data.self_feed_temperature >= 0"),
        ("no_equals_sign", "not of the form a.b=value"),
    ],
)
def test_bad_overrides_are_rejected_with_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        resolve_config(overrides=[override])


def test_yaml_is_type_checked_and_later_layers_win() -> None:
    yaml_data = yaml.safe_load("preset: tiny\nmax_steps: 50\noptim: {lr: 2.0e-4, weight_decay: 0.0}\n")
    cfg = resolve_config(yaml_data=yaml_data, flags={"max_steps": 60}, overrides=["max_steps=70"])
    assert (cfg.max_steps, cfg.optim.lr, cfg.optim.weight_decay) == (70, 2e-4, 0.0)
    with pytest.raises(ConfigError, match="max_steps: expected an integer"):
        resolve_config(yaml_data={"max_steps": "many"})
    with pytest.raises(ConfigError, match="gradient_accumulation_steps: expected an integer"):
        resolve_config(yaml_data={"gradient_accumulation_steps": True})  # a bool is not an int
    with pytest.raises(ConfigError, match="unknown config key 'optim.momentum'"):
        resolve_config(yaml_data={"optim": {"momentum": 0.9}})


def test_saved_config_round_trips_and_resume_base_keeps_the_model() -> None:
    cfg = resolve_config(flags={"preset": "small"}, overrides=["model.text_vocab_size=777", "optim.lr=5e-4"])
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg
    # resuming: the saved config is the base; the same preset flag must not reset the model section
    resumed = resolve_config(base=again, flags={"preset": "small", "max_steps": 99})
    assert resumed.model.text_vocab_size == 777 and resumed.max_steps == 99
    assert set(config_diff(cfg, resumed)) == {"max_steps"}


def test_shipped_deepspeed_configs_hold_system_settings_only() -> None:
    cfg = resolve_config(overrides=["gradient_accumulation_steps=4", "optim.grad_clip=0.5", "optim.lr=1e-3"])
    stages = {}
    for path in sorted((ROOT / "ds_configs").glob("*.json")):
        system = load_ds_config(path)
        ds = build_ds_config(system, cfg, resolve_precision("auto", torch.device("cpu")), torch.device("cpu"))
        assert ds["gradient_accumulation_steps"] == 4 and ds["gradient_clipping"] == 0.5
        assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == 1e-3
        assert ds["optimizer"]["params"]["torch_adam"] is True  # no compiled extension on CPU
        assert ds["bf16"]["enabled"] is False  # auto -> fp32 on CPU
        assert "offload_optimizer" not in ds["zero_optimization"]  # nothing to offload from on CPU
        stages[path.name] = ds["zero_optimization"]["stage"]
    assert stages == {"zero1.json": 1, "zero2.json": 2, "zero3.json": 3, "zero3_offload.json": 3}
    gpu = build_ds_config(load_ds_config(ROOT / "ds_configs" / "zero3_offload.json"), cfg, "bf16",
                          torch.device("cuda", 0))
    assert gpu["bf16"]["enabled"] is True
    assert gpu["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert "torch_adam" not in gpu["optimizer"]["params"]  # offload needs DeepSpeed's CPU Adam


def test_deepspeed_config_that_sets_training_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"},
                                "train_micro_batch_size_per_gpu": 8}))
    with pytest.raises(DeepSpeedConfigError, match=r"bad.json sets \['train_micro_batch_size_per_gpu', "
                                                   r"'optimizer'\]"):
        load_ds_config(path)
    path.write_text("{not json")
    with pytest.raises(DeepSpeedConfigError, match="bad.json: invalid JSON"):
        load_ds_config(path)
    with pytest.raises(ValueError, match="bf16 needs a GPU"):
        resolve_precision("bf16", torch.device("cpu"))


def test_warmup_cosine_schedule() -> None:
    sched = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert sched(0) == pytest.approx(0.1) and sched(9) == pytest.approx(1.0)
    assert sched(10) == pytest.approx(1.0)
    assert sched(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert sched(110) == pytest.approx(0.1) and sched(500) == pytest.approx(0.1)
    values = [sched(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_param_groups_decay_matrices_only() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.dim() for p in decay["params"]} == {2} and len(decay["params"]) == 2
    assert {p.dim() for p in no_decay["params"]} == {1} and len(no_decay["params"]) == 3


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(gen), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    gen2 = torch.Generator().manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), gen2)
    got = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen2).item())
    assert got == expected


def test_default_config_is_valid() -> None:
    assert resolve_config() == TrainConfig()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("train_*.yaml")), ids=lambda p: p.name)
def test_shipped_yaml_configs_resolve(path: Path) -> None:
    cfg = resolve_config(yaml_data=load_yaml(path))
    assert cfg.preset in path.name  # each file is named after its preset
    assert cfg.max_steps > cfg.schedule.warmup_steps
