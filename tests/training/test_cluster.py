"""Cluster readiness on one CPU machine (gloo), with the real launchers and DeepSpeed engines:

- 7 clips in 1 shard train on 2 ranks (fewer shards than ranks: the loader splits by sample);
- a simulated two-node job, one rank per "node", launched as a cluster user would: two `torchrun --nnodes 2
  --node_rank N` processes, and two `deepspeed --hostfile H --no_ssh --node_rank N` processes (the DeepSpeed
  launcher without ssh, each node started by hand or by the scheduler); the ranks see disjoint data, each
  checkpoint is written once, and the export equals the single-node run's with the same global batch;
- a run checkpointed on 2 ranks resumes on 1, and that one on 2 again, at ZeRO 1, 2 and 3: weights and
  Adam moments come back exactly (universal checkpoint), and no sample is repeated before every sample of
  the epoch was seen (up to the one global batch in which the epoch ends).

The runs go through tests/training/probe_state.py (scripts/train.py plus probes for the weights, the Adam
moments and the keys each rank trained on).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from suite_helpers import port_taken, run_on_free_port, single_rank_env
from training_helpers import FAST_OVERRIDES, ROOT, launch_all, write_token_shards

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
PROBE = HERE / "probe_state.py"
BIN = Path(sys.executable).parent
CLIPS = 7
SETTINGS = [*FAST_OVERRIDES, "log.every=1", "eval_every=0", "checkpoint_every=2", "keep_checkpoints=5",
            "optim.lr=3e-3", "schedule.warmup_steps=2", "schedule.total_steps=8"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 clips in 1 token shard: the small fine-tuning set of the issue."""
    out = tmp_path_factory.mktemp("clips") / "tokens"
    write_token_shards(out, num_shards=1, per_shard=CLIPS)
    return out


def _train_args(data: Path, out: Path, stage: int, max_steps: int, resume: bool) -> list[str]:
    return [str(PROBE), "--data", str(data), "--out", str(out), "--preset", "tiny", "--deepspeed",
            str(ROOT / "ds_configs" / f"zero{stage}.json"), "--max-steps", str(max_steps), *SETTINGS,
            *(["--resume"] if resume else [])]


def _run(cmds: list[list[str]], probe: Path, env: dict | None = None) -> list[str]:
    results = launch_all(cmds, env={"PROBE_DIR": str(probe), **(env or {})}, timeout=400)
    for status, output in results:
        assert status == 0, output[-6000:]
    return [output for _, output in results]


def train_run(data: Path, out: Path, probe: Path, ranks: int, stage: int, max_steps: int,
              resume: bool = False) -> str:
    """One node: `torchrun --standalone` (it picks its own free port) for 2 ranks, plain python for 1."""
    args = _train_args(data, out, stage, max_steps, resume)
    if ranks == 1:
        return _run([[sys.executable, *args]], probe, single_rank_env())[0]
    return _run([[str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(ranks), *args]], probe)[0]


def two_node_run(data: Path, out: Path, probe: Path, launcher: str, hostfile: Path) -> list[str]:
    """Two one-rank "nodes" on loopback, each started as a cluster user starts a node; their outputs."""
    args = _train_args(data, out, 2, 2, resume=False)

    def node(rank: int, port: int) -> list[str]:
        if launcher == "torchrun":
            return [str(BIN / "torchrun"), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                    "--master_addr", "127.0.0.1", "--master_port", str(port), *args]
        return [str(BIN / "deepspeed"), "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(rank),
                "--master_addr", "127.0.0.1", "--master_port", str(port), *args]

    def launch(port: int) -> list[tuple[int, str]]:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(probe, ignore_errors=True)
        return launch_all([node(0, port), node(1, port)], env={"PROBE_DIR": str(probe)}, timeout=400)

    results = run_on_free_port(launch, clashed=lambda rs: any(s != 0 and port_taken(o) for s, o in rs))
    for status, output in results:
        assert status == 0, output[-6000:]
    return [output for _, output in results]


def keys_by_step(probe: Path) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    for path in sorted(probe.glob("keys_rank*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            steps.setdefault(row["step"], []).extend(row["keys"])
    return steps


def assert_no_repeat_before_epoch_end(steps: dict[int, list[str]], total: int) -> None:
    """Every step's keys are new, unless the epoch ends within that step (all `total` samples seen by its
    end): no sample repeated or skipped beyond one global batch."""
    seen: set[str] = set()
    for step in sorted(steps):
        keys = steps[step]
        repeated = [k for k in keys if k in seen] + [k for k in set(keys) if keys.count(k) > 1]
        seen.update(keys)
        if repeated:
            assert len(seen) >= total, f"step {step} repeats {repeated} with only {len(seen)}/{total} seen"
            return


def assert_same_state(saved: Path, restored: Path) -> None:
    a, b = torch.load(saved, weights_only=True), torch.load(restored, weights_only=True)
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=f"{key} differs after the resume")
    assert a["exp_avg"].abs().sum() > 0 and a["exp_avg_sq"].abs().sum() > 0  # real moments, not zeros


def metrics(out: Path) -> dict[int, dict]:
    rows = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def single_node(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """2 ranks on one node, ZeRO-2, 2 steps: the reference of the two-node runs and the first leg of the
    ZeRO-2 resume test. (run directory, probe directory)"""
    root = tmp_path_factory.mktemp("single")
    train_run(clips, root / "run", root / "probe", 2, 2, 2)
    return root / "run", root / "probe"


def test_one_shard_of_seven_clips_trains_on_two_ranks(single_node: tuple[Path, Path]) -> None:
    run, probe = single_node
    steps = keys_by_step(probe)
    assert sorted(steps) == [1, 2] and all(len(keys) >= 2 for keys in steps.values())  # both ranks trained
    assert_no_repeat_before_epoch_end(steps, CLIPS)
    assert all(math.isfinite(m["loss"]) for m in metrics(run).values())
    assert (run / "export" / "model.safetensors").is_file()


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_two_nodes_match_one_node(clips: Path, single_node: tuple[Path, Path], tmp_path: Path,
                                  launcher: str) -> None:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")  # names only: --no_ssh never contacts them
    out, probe = tmp_path / "run", tmp_path / "probe"
    node0, node1 = two_node_run(clips, out, probe, launcher, hostfile)
    # each node's one rank has its own global rank (a local rank taken for the global one: two rank 0s)
    assert sorted(p.name for p in probe.glob("keys_rank*.jsonl")) == ["keys_rank0.jsonl", "keys_rank1.jsonl"]
    # disjoint data: in the first epoch no rank trained on a sample another rank had
    per_rank = [[k for line in (probe / f"keys_rank{r}.jsonl").read_text().splitlines()
                 for k in json.loads(line)["keys"]] for r in range(2)]
    assert per_rank[0] and per_rank[1] and not set(per_rank[0]) & set(per_rank[1])
    # each checkpoint written once: one set of files, saved (and logged) by rank 0 only
    ckpt = out / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "mp_rank_00_model_states.pt", "train_config.yaml", "train_state_rank00000.pt",
        "train_state_rank00001.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert (node0 + node1).count(f"saved checkpoint {ckpt}") == 1
    # the same global batch as one node with 2 ranks: the same model
    reference, _ = single_node
    ours, theirs = load_file(out / "export" / "model.safetensors"), load_file(reference / "export" /
                                                                               "model.safetensors")
    assert set(ours) == set(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_resume_two_ranks_then_one_then_two(clips: Path, single_node: tuple[Path, Path], tmp_path: Path,
                                            stage: int) -> None:
    run, first = tmp_path / "run", tmp_path / "probe1"
    if stage == 2:  # the single-node fixture is this leg already
        shutil.copytree(single_node[0], run)
        shutil.copytree(single_node[1], first)
    else:
        train_run(clips, run, first, 2, stage, 2)
    out = train_run(clips, run, tmp_path / "probe2", 1, stage, 4, resume=True)
    assert "resumed step 2 from 2 ranks on 1 rank" in out, out[-4000:]
    assert f"ZeRO-{stage} via universal checkpoint" in out
    assert (run / "checkpoints" / "universal" / "step_00000002").is_dir()
    out = train_run(clips, run, tmp_path / "probe3", 2, stage, 6, resume=True)
    assert "resumed step 4 from 1 rank on 2 ranks" in out, out[-4000:]
    # the engine state came back exactly, only partitioned differently
    assert_same_state(first / "save_step2_world2.pt", tmp_path / "probe2" / "restore_step2_world1.pt")
    assert_same_state(tmp_path / "probe2" / "save_step4_world1.pt",
                      tmp_path / "probe3" / "restore_step4_world2.pt")
    train = metrics(run)
    assert sorted(train) == list(range(1, 7)) and all(math.isfinite(m["loss"]) for m in train.values())
    steps = {}
    for probe in (first, tmp_path / "probe2", tmp_path / "probe3"):
        steps.update(keys_by_step(probe))
    assert sorted(steps) == list(range(1, 7))
    assert_no_repeat_before_epoch_end(steps, CLIPS)
    assert (run / "export" / "model.safetensors").is_file()
