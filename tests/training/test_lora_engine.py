"""The LoRA fine-tune loop in this process with a real DeepSpeed ZeRO-2 engine (one CPU rank, gloo) on token
shards in the real schema: evaluations that run real generation in the middle of training must not detach
the model from the optimizer (the model keeps computing with the weights DeepSpeed updates), the kept
adapter is the one the selection rule picked, and the curve files say so."""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed
import pytest
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param
from safetensors.torch import load_file
from suite_helpers import single_rank_env
from training_helpers import NUM_CODEBOOKS, ROOT, transcripts, write_token_shards

from data_pipeline.loading.batching import BatchingConfig
from data_pipeline.text.tokenizer import TextTokenizer
from lm.adapters.lora import LoraSettings, base_identity
from lm.adapters.lora_finetune import FinetuneConfig, LoraFinetuner
from lm.inference.generate import TTSRequest, generate
from lm.inference.sampling import SamplingConfig
from lm.model.config import get_preset
from lm.model.model import TTSModel


@pytest.fixture(scope="module")
def world_of_one():
    with pytest.MonkeyPatch.context() as mp:
        for key, value in single_rank_env().items():
            mp.setenv(key, value)
        from lm.training.deepspeed_setup import init_distributed

        init_distributed()
        yield
        if dist.is_initialized():
            # through DeepSpeed, which then drops its cached groups (stale ones break a later engine)
            deepspeed.comm.destroy_process_group()


class GeneratingEvaluator:
    """Runs real generation (the KV-cache decode path, as synthesis does) and records, at every evaluation,
    how far the weights the model computes with are from DeepSpeed's fp32 masters, and the LoRA weights.
    Scores are scripted so the selection is known: SIM peaks at the second evaluation."""

    sims = [0.50, 0.60, 0.70, 0.65, 0.64]

    def __init__(self) -> None:
        self.trainer: LoraFinetuner | None = None
        self.gaps: list[float] = []
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: TTSModel, step: int) -> dict:
        request = TTSRequest(torch.tensor([5, 6, 7]), torch.randint(0, 1024, (NUM_CODEBOOKS, 20)))
        generate(model, [request], SamplingConfig(max_new_frames=4), torch.Generator().manual_seed(0))
        params = {n: p for n, p in self.trainer.engine.module.named_parameters() if p.requires_grad}
        self.gaps.append(max(float((safe_get_full_fp32_param(p) - p.detach()).abs().max())
                             for p in params.values()))
        self.snapshots.append({n: p.detach().clone() for n, p in params.items()})
        return {"sim": self.sims[len(self.gaps) - 1], "wer": 0.1}


def make_trainer(tmp_path: Path, evaluator: GeneratingEvaluator, **changes) -> LoraFinetuner:
    shards = write_token_shards(tmp_path / "tokens", num_shards=1, per_shard=12)
    tokenizer = TextTokenizer.train([t for _, t in transcripts()], tmp_path / "text.model", vocab_size=400)
    config = get_preset("tiny", text_vocab_size=tokenizer.vocab_size, num_codebooks=NUM_CODEBOOKS)
    torch.manual_seed(0)
    model = TTSModel(config)
    cfg = FinetuneConfig(lora=LoraSettings(rank=4, alpha=8.0, dropout=0.0), max_steps=10, eval_every=2,
                         patience=2, lr=1e-2, warmup_steps=1, seed=3,
                         batching=BatchingConfig(max_frames=700, max_seconds=2.0, prompt_min_seconds=0.4,
                                                 prompt_max_seconds=0.8))
    for key, value in changes.items():
        setattr(cfg, key, value)
    trainer = LoraFinetuner(model, [str(s) for s in shards], tokenizer.encode, cfg,
                            ROOT / "ds_configs" / "zero2.json", tmp_path / "out",
                            base_identity(model, "tiny"), evaluator)
    evaluator.trainer = trainer
    return trainer


def test_evaluations_mid_training_keep_the_model_on_the_optimizer_and_keep_the_best(world_of_one,
                                                                                    tmp_path) -> None:
    evaluator = GeneratingEvaluator()
    result = make_trainer(tmp_path, evaluator).run()

    # evaluations at 0, 2, 4, 6, 8; SIM peaked at step 4, and two evaluations brought nothing better
    assert [p.step for p in result.curve] == [0, 2, 4, 6, 8]
    assert (result.best, result.stop_reason, result.steps) == (2, "early_stop", 8)
    assert evaluator.gaps == [0.0] * 5  # the model computes with exactly what the optimizer updates
    first, *later = evaluator.snapshots
    assert all(any(not torch.equal(snap[n], prev[n]) for n in snap)
               for prev, snap in zip([first, *later], later, strict=False))  # training reaches the model
    kept = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    at_best = evaluator.snapshots[2]
    for name, value in kept.items():  # peft drops the adapter name ("default") from the saved keys
        live = name.replace("lora_A.weight", "lora_A.default.weight").replace("lora_B.weight",
                                                                             "lora_B.default.weight")
        assert torch.equal(value, at_best[live])
    meta = json.loads((tmp_path / "out" / "adapter" / "base_model.json").read_text())
    assert (meta["step"], meta["sim"]) == (4, 0.70)
    rows = [json.loads(line) for line in (tmp_path / "out" / "curve.jsonl").read_text().splitlines()]
    assert [r["sim"] for r in rows] == [0.50, 0.60, 0.70, 0.65, 0.64]
    assert Path(tmp_path / "out" / "curve.md").read_text().count("| * |") == 1


def test_a_spent_time_budget_stops_training_with_the_baseline_kept(world_of_one, tmp_path) -> None:
    evaluator = GeneratingEvaluator()
    result = make_trainer(tmp_path, evaluator, time_budget_s=1e-3).run()
    assert (result.stop_reason, result.steps, [p.step for p in result.curve]) == ("time_budget", 0, [0])
    assert json.loads((tmp_path / "out" / "adapter" / "base_model.json").read_text())["step"] == 0
