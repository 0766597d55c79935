"""ar_codebooks = 2 through the real trainer (one-process DeepSpeed ZeRO-2 on CPU): the delayed codebook's
loss is trained, logged and validated (with its own text gap), and the export reproduces the engine."""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed.comm
import pytest
import torch
import torch.distributed as dist
from suite_helpers import single_rank_env
from training_helpers import FAST_OVERRIDES, ROOT

from data_pipeline.loading.loader import build_loader
from data_pipeline.text.tokenizer import TextTokenizer
from lm.checkpoint import load_model
from lm.training.config import resolve_config
from lm.training.trainer import train


def test_delayed_codebook_trains_validates_and_exports(token_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = resolve_config(flags={"preset": "tiny", "max_steps": 4, "data": {"train": str(token_dir)}},
                         overrides=[*FAST_OVERRIDES, "log.every=2", "eval_every=4", "eval_batches=4",
                                    "checkpoint_every=4", "optim.lr=3e-3", "schedule.warmup_steps=1",
                                    "model.ar_codebooks=2"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in single_rank_env().items():
                mp.setenv(key, value)
            result = train(cfg, out, ROOT / "ds_configs" / "zero2.json")
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        step2, val = lines[0], lines[-1]
        # the shards hold 2 codebooks and the AR predicts both: no NAR, loss = codebook-1 CE + delayed CE
        assert "nar_loss" not in step2
        assert step2["loss"] == pytest.approx(step2["ar_loss"] + step2["ar_delayed_loss"], rel=1e-4)
        assert val["split"] == "val"
        assert val["loss"] == pytest.approx(val["ar_loss"] + val["ar_delayed_loss"], rel=1e-6)
        gap = val["ar_delayed_loss_other_text"] - val["ar_delayed_loss"]
        assert val["ar_delayed_text_gap"] == pytest.approx(gap)
        assert val["ar_delayed_loss_other_text"] != val["ar_delayed_loss"]  # really fed the other texts

        exported = load_model(out / "export")
        assert exported.config.ar_codebooks == 2 and exported.nar is None
        tokenizer = TextTokenizer.load(out / "export" / "tokenizer.model")
        loader = build_loader(str(token_dir), tokenizer.encode, infinite=False, num_codebooks=2,
                              max_frames=700, min_seconds=0.5, max_seconds=2.0, prompt_min_seconds=0.4,
                              prompt_max_seconds=0.8)
        batch = next(iter(loader))
        lm = exported.build_batch(batch, continuation_prob=0.5, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want, got = result.engine.module.eval()(lm), exported(lm)
        torch.testing.assert_close(got.delayed_logits, want.delayed_logits, rtol=0, atol=1e-6)
        init = type(exported)(exported.config)
        assert not torch.equal(init.ar.delayed_heads[0].weight, exported.ar.delayed_heads[0].weight)
    finally:
        if dist.is_initialized():
            deepspeed.comm.destroy_process_group()
