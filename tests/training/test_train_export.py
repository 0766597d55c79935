"""One-process training in this process (real DeepSpeed ZeRO-2 engine on CPU, gloo): the export loads
without DeepSpeed and computes the engine's logits; checkpoints holding a pickle payload are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import deepspeed.comm
import pytest
import torch
import torch.distributed as dist
from suite_helpers import single_rank_env
from training_helpers import FAST_OVERRIDES, ROOT, script_main

from data_pipeline.text.tokenizer import TextTokenizer
from lm.checkpoint import load_model, read_config
from lm.training.config import resolve_config
from lm.training.deepspeed_setup import UnsafeCheckpointError, safe_torch_load
from lm.training.export import export_checkpoint
from lm.training.run_setup import RunPaths, prepare_tokenizer
from lm.training.train_state import latest_tag, load_checkpoint, state_file
from lm.training.trainer import TrainResult, train


class Payload:
    """Unpickling this creates `marker`: the proof that a loader executed pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


@pytest.fixture(scope="module")
def trained(token_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path]:
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = resolve_config(flags={"preset": "tiny", "max_steps": 4, "data": {"train": str(token_dir)}},
                         overrides=[*FAST_OVERRIDES, "log.every=2", "eval_every=4", "eval_batches=4",
                                    "checkpoint_every=2", "optim.lr=3e-3", "schedule.warmup_steps=1",
                                    "align.weight=1.0", "align.layer=1",
                                    "tokenizer.frontend=espeak-ng:en-us"])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in single_rank_env().items():
            mp.setenv(key, value)
        result = train(cfg, out, ROOT / "ds_configs" / "zero2.json")
        yield result, out
        if dist.is_initialized():
            # through DeepSpeed, which then drops its cached groups (stale ones break a later engine)
            deepspeed.comm.destroy_process_group()


def test_run_writes_checkpoints_logs_and_a_self_contained_export(trained: tuple[TrainResult, Path]) -> None:
    result, out = trained
    assert result.step == 4 and not result.stopped_by_signal
    assert latest_tag(out / "checkpoints") == "step_00000004"
    assert (out / "checkpoints" / "step_00000002" / state_file(0)).is_file()
    assert {p.name for p in (out / "export").iterdir()} == {
        "model.safetensors", "config.json", "tokenizer.model", "train_config.yaml"}
    config, meta = read_config(out / "export")
    assert meta["codec"] == "encodec_24khz:random@1.5" and meta["text_tokenizer"] == "tokenizer.model"
    assert (config.num_codebooks, config.codebook_size) == (2, 1024)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # train at steps 2 and 4, validation at 4
    val = json.loads(lines[-1])
    assert val["split"] == "val"
    # the same batches read with another row's transcript: an untrained model barely notices (|gap| small)
    assert val["text_gap"] == pytest.approx(val["ar_loss_other_text"] - val["ar_loss"])
    assert abs(val["text_gap"]) < 0.5
    assert val["nar_text_gap"] == pytest.approx(val["nar_loss_other_text"] - val["nar_loss"])
    assert val["nar_loss_other_text"] != val["nar_loss"]  # the NAR was really fed the other texts
    assert abs(val["nar_text_gap"]) < 0.5
    # the guided-attention loss ran through the DeepSpeed engine and was logged in [0, 1]
    train_lines = [json.loads(line) for line in lines[:2]]
    assert all(0.0 < m["align_loss"] <= 1.0 for m in [*train_lines, val])
    assert train_lines[1]["loss"] > train_lines[1]["ar_loss"] + train_lines[1]["nar_loss"]
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_metrics.values())


def test_the_phoneme_frontend_travels_with_the_run(trained: tuple[TrainResult, Path]) -> None:
    _, out = trained
    exported = TextTokenizer.load(out / "export" / "tokenizer.model")
    assert exported.frontend == "espeak-ng:en-us"
    assert "ˈ" in exported.decode(exported.encode("The cat sat."))  # IPA stress marks, not spelling
    other = resolve_config(overrides=["tokenizer.frontend=espeak-ng:en-gb"])
    with pytest.raises(ValueError, match="start a new run directory"):
        prepare_tokenizer(other, RunPaths(out), [], rank=0)


def test_export_loads_without_deepspeed_and_matches_the_engine(trained: tuple[TrainResult, Path],
                                                               token_dir: Path) -> None:
    result, out = trained
    from data_pipeline.loading.loader import build_loader
    from data_pipeline.text.tokenizer import TextTokenizer

    exported = load_model(out / "export")
    module = result.engine.module.eval()
    tokenizer = TextTokenizer.load(out / "export" / "tokenizer.model")
    batch = next(iter(build_loader(str(token_dir), tokenizer.encode, infinite=False, num_codebooks=2,
                                   max_frames=700, min_seconds=0.5, max_seconds=2.0, prompt_min_seconds=0.4,
                                   prompt_max_seconds=0.8)))
    lm = exported.build_batch(batch, continuation_prob=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = module(lm), exported(lm)
    torch.testing.assert_close(got.ar_logits, want.ar_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.nar_logits, want.nar_logits, rtol=0, atol=1e-6)
    # and the weights are the trained ones, not the initialisation
    init = type(exported)(exported.config)
    assert not torch.equal(init.ar.code_head.weight, exported.ar.code_head.weight)


def _copy_checkpoint(out: Path, dest: Path) -> tuple[Path, str]:
    tag = latest_tag(out / "checkpoints")
    root = dest / "checkpoints"
    shutil.copytree(out / "checkpoints" / tag, root / tag)
    (root / "latest").write_text(tag)
    return root, tag


def test_pickle_payload_in_our_train_state_is_refused(trained: tuple[TrainResult, Path],
                                                      tmp_path: Path) -> None:
    result, out = trained
    root, tag = _copy_checkpoint(out, tmp_path)
    path = root / tag / state_file(0)
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "executed"
    torch.save({**state, "loader": {"evil": Payload(marker)}}, path)
    with pytest.raises(UnsafeCheckpointError, match=state_file(0)):
        load_checkpoint(result.engine, root, tag)
    assert not marker.exists()


def test_pickle_payload_in_a_deepspeed_file_is_refused(trained: tuple[TrainResult, Path],
                                                       tmp_path: Path) -> None:
    result, out = trained
    root, tag = _copy_checkpoint(out, tmp_path)
    path = root / tag / "mp_rank_00_model_states.pt"
    states = safe_torch_load(path)  # DeepSpeed's own file loads with the weights-only allow-list
    marker = tmp_path / "executed"
    torch.save({**states, "evil": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="mp_rank_00_model_states.pt"):
        load_checkpoint(result.engine, root, tag)
    assert not marker.exists()
    # the payload really is live: the unsafe loader DeepSpeed uses by default would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_validation_text_swap_moves_every_transcript_to_the_next_row() -> None:
    from data_pipeline.records import TTSBatch
    from lm.training.validation import _rolled_texts

    def batch(texts: list[list[int]]) -> TTSBatch:
        ids = torch.zeros(len(texts), max(map(len, texts)), dtype=torch.long)
        for i, t in enumerate(texts):
            ids[i, : len(t)] = torch.tensor(t)
        n = len(texts)
        return TTSBatch(keys=[str(t) for t in texts], speakers=[""] * n, text_ids=ids,
                        text_lengths=torch.tensor([len(t) for t in texts]), codes=torch.zeros(n, 1, 2),
                        frame_lengths=torch.full((n,), 2), prompt_codes=torch.zeros(n, 1, 1),
                        prompt_lengths=torch.ones(n), texts=[f"t{t[0]}" for t in texts])

    rolled = _rolled_texts([batch([[1, 1, 1]]), batch([[2], [3, 3]])])  # batches of one row work too
    rows = [(b.text_ids[i, : int(b.text_lengths[i])].tolist(), b.texts[i]) for b in rolled
            for i in range(len(b.keys))]
    assert rows == [([3, 3], "t3"), ([1, 1, 1], "t1"), ([2], "t2")]
    assert [b.keys for b in rolled] == [["[1, 1, 1]"], ["[2]", "[3, 3]"]]  # audio stays where it was
    assert _rolled_texts([batch([[5]])]) == []


def test_a_checkpoint_exports_like_the_run_without_deepspeed(trained: tuple[TrainResult, Path],
                                                             tmp_path: Path) -> None:
    """scripts/export_checkpoint.py: the last checkpoint's export equals the run's own export (the fp32
    masters), an earlier one holds other weights, and a wrong tag is an error."""
    _, out = trained
    export = script_main("export_checkpoint")
    assert export(["--run", str(out), "--out", str(tmp_path / "last")]) == 0
    assert export(["--run", str(out), "--out", str(tmp_path / "early"), "--tag", "step_00000002"]) == 0
    run_export, last, early = (load_model(d) for d in (out / "export", tmp_path / "last", tmp_path / "early"))
    assert last.config == run_export.config
    for (name, want), got in zip(run_export.state_dict().items(), last.state_dict().values(), strict=True):
        assert torch.equal(got, want), name
    pairs = zip(last.state_dict().values(), early.state_dict().values(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)
    _, meta = read_config(tmp_path / "early")
    assert meta["train_step"] == 2 and meta["codec"] == "encodec_24khz:random@1.5"
    assert {p.name for p in (tmp_path / "early").iterdir()} == {
        "model.safetensors", "config.json", "tokenizer.model", "train_config.yaml"}
    assert export(["--run", str(out), "--out", str(tmp_path / "x"), "--tag", "step_00000003"]) == 2


def test_a_pickle_payload_stops_a_checkpoint_export(trained: tuple[TrainResult, Path],
                                                    tmp_path: Path) -> None:
    _, out = trained
    root, tag = _copy_checkpoint(out, tmp_path / "run")
    shutil.copyfile(out / "tokenizer.model", tmp_path / "run" / "tokenizer.model")
    path = root / tag / "mp_rank_00_model_states.pt"
    state = safe_torch_load(path)
    marker = tmp_path / "executed"
    torch.save({**state, "evil": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=tag):
        export_checkpoint(tmp_path / "run", tmp_path / "export")
    assert not marker.exists() and not (tmp_path / "export").exists()
