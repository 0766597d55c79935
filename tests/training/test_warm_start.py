"""A run started from published weights (`init_from`, lm/training/warm_start.py): the real publish step (fp16
weights) and two real one-rank DeepSpeed runs. The second run starts with the published weights and
tokenizer and continues the step count and learning-rate schedule; a model that does not match is refused
with the file named."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import deepspeed.comm
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from suite_helpers import single_rank_env
from training_helpers import FAST_OVERRIDES, ROOT, script_main

from lm.checkpoint import read_config
from lm.model.model import TTSModel
from lm.training.config import resolve_config
from lm.training.optimizer import WarmupCosine
from lm.training.trainer import train
from lm.training.warm_start import load_init_weights

SETTINGS = [*FAST_OVERRIDES, "log.every=1", "eval_every=0", "checkpoint_every=0", "optim.lr=3e-3",
            "schedule.warmup_steps=2", "schedule.total_steps=10"]


def _config(token_dir: Path, max_steps: int, *extra: str):
    return resolve_config(flags={"preset": "tiny", "max_steps": max_steps, "data": {"train": str(token_dir)}},
                          overrides=[*SETTINGS, *extra])


@pytest.fixture(scope="module")
def runs(token_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("warm")
    first, published, second = root / "first", root / "published", root / "second"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in single_rank_env().items():
            mp.setenv(key, value)
        train(_config(token_dir, 4), first, ROOT / "ds_configs" / "zero2.json")
        assert script_main("publish_default")(["--export", str(first / "export"), "--out",
                                               str(published)]) == 0
        train(_config(token_dir, 6, f"init_from={published}"), second, ROOT / "ds_configs" / "zero2.json")
        yield first, published, second
        if dist.is_initialized():
            deepspeed.comm.destroy_process_group()


def test_the_second_run_continues_steps_schedule_and_tokenizer(runs: tuple[Path, Path, Path]) -> None:
    first, published, second = runs
    rows = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 6]
    schedule = WarmupCosine(2, 10, 0.1)
    for row in rows:  # the learning rate of step s is the schedule's at optimizer step s - 1
        assert row["lr"] == pytest.approx(3e-3 * schedule(row["step"] - 1), rel=1e-6)
    assert filecmp.cmp(published / "tokenizer.model", second / "tokenizer.model", shallow=False)
    _, meta = read_config(second / "export")
    assert meta["train_step"] == 6 and meta["init_from"] == str(published)


def test_a_warm_started_run_resumes_from_its_own_checkpoint(runs: tuple[Path, Path, Path], token_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The second run's step-6 checkpoint continues (once refused: DeepSpeed had counted 2 steps, we 6)."""
    _, published, second = runs
    for key, value in single_rank_env().items():
        monkeypatch.setenv(key, value)
    ds_config = ROOT / "ds_configs" / "zero2.json"
    result = train(_config(token_dir, 7, f"init_from={published}"), second, ds_config, resume=True)
    rows = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert result.step == 7 and [r["step"] for r in rows if r["split"] == "train"] == [5, 6, 7]
    _, meta = read_config(second / "export")
    assert meta["train_step"] == 7


def test_init_weights_are_the_published_ones(runs: tuple[Path, Path, Path]) -> None:
    _, published, _ = runs
    config, _ = read_config(published)
    torch.manual_seed(99)
    model = TTSModel(config)
    assert load_init_weights(model, published) == 4
    stored = load_file(str(published / "model.safetensors"))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, stored[name].to(tensor.dtype)), name


def test_a_model_of_another_shape_is_refused_naming_the_file(runs: tuple[Path, Path, Path]) -> None:
    _, published, _ = runs
    config, _ = read_config(published)
    other = TTSModel(type(config)(**{**config.__dict__, "ar_num_layers": config.ar_num_layers + 1}))
    with pytest.raises(ValueError, match=r"config\.json.*ar_num_layers"):
        load_init_weights(other, published)
