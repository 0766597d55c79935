"""data.self_feed through the real trainer (one-process DeepSpeed ZeRO-2 on CPU): every step feeds the AR
some of its own draws, from logits of the model being trained, and the run trains to finite losses."""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed.comm
import pytest
import torch
import torch.distributed as dist
from suite_helpers import single_rank_env
from training_helpers import FAST_OVERRIDES, ROOT

import lm.training.trainer as trainer_module
from lm.training.config import resolve_config
from lm.training.trainer import train


def test_every_step_feeds_the_ar_its_own_draws(token_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = resolve_config(flags={"preset": "tiny", "max_steps": 3, "data": {"train": str(token_dir)}},
                         overrides=[*FAST_OVERRIDES, "log.every=1", "eval_every=0", "checkpoint_every=3",
                                    "data.self_feed=0.5", "data.self_feed_temperature=1.0"])
    real = trainer_module.self_feed_target_codes
    calls: list[tuple[int, int]] = []

    def recording(batch, logits, vocab, share, temperature, generator):
        before = batch.input_ids.clone()
        assert logits.shape[:2] == before.shape and not logits.requires_grad  # a no-grad pass of this batch
        fed = real(batch, logits, vocab, share, temperature, generator)
        calls.append((int((fed.input_ids != before).sum()), int(vocab.is_audio(before).sum())))
        return fed

    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in single_rank_env().items():
                mp.setenv(key, value)
            mp.setattr(trainer_module, "self_feed_target_codes", recording)
            train(cfg, out, ROOT / "ds_configs" / "zero2.json")
        assert len(calls) == 3
        for changed, audio in calls:
            assert 0 < changed < audio  # some target inputs, never all of them (nor the prompt's)
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps if s.get("split") != "val"] == [1, 2, 3]
        assert all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
    finally:
        if dist.is_initialized():
            deepspeed.comm.destroy_process_group()
