"""Two CPU ranks (gloo) under the real `deepspeed` launcher, ZeRO-2: a run interrupted after a checkpoint
(by a crash right after it, or by SIGTERM at a known step) and resumed computes the same losses, step for
step, as the uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from suite_helpers import port_taken, run_on_free_port
from training_helpers import FAST_OVERRIDES, ROOT

from lm.training.train_state import latest_tag

# four runs of the real launcher with two ranks: ~100 CPU seconds, mostly 3 processes importing torch etc.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 8  # the schedule's length: fixed, so a run stopped early has the same learning rates
SETTINGS = [*FAST_OVERRIDES, "log.every=1", "eval_every=3", "eval_batches=4", "checkpoint_every=3",
            "keep_checkpoints=5", "optim.lr=3e-3", "schedule.warmup_steps=2", f"schedule.total_steps={TOTAL}"]
COMPARED = ("loss", "ar_loss", "nar_loss", "grad_norm", "lr")
HERE = Path(__file__).resolve().parent
STOP_AT = 4  # the SIGTERM test's stop: after the step-3 checkpoint, not itself a checkpoint step


def _command(data: Path, out: Path, max_steps: int, port: int, resume: bool = False,
             script: Path = ROOT / "scripts" / "train.py") -> list[str]:
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(port)]
    args = ["--data", str(data), "--out", str(out), "--preset", "tiny", "--deepspeed",
            str(ROOT / "ds_configs" / "zero2.json"), "--max-steps", str(max_steps), *SETTINGS]
    return [*launcher, str(script), *args, *(["--resume"] if resume else [])]


def _launch(cmd: list[str], env: dict | None = None, timeout: float = 420) -> tuple[int, str]:
    """The launcher run to its end in its own process group -> (exit status, output). Past `timeout`
    the whole group (launcher and ranks) is killed and the test fails with the output so far: no read
    waits for ever, no rank outlives the test."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    try:
        output, _ = proc.communicate(timeout=timeout)  # to the end of the output: every rank has exited
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"{' '.join(cmd[:6])} ... still running after {timeout} s: {output[-4000:]}")
    return proc.returncode, output


def _run(data: Path, out: Path, max_steps: int, resume: bool = False) -> str:
    """The launcher run to completion, started again on another port if its port was taken before rank 0
    bound it (that fails before the run writes anything); its output."""
    status, output = run_on_free_port(lambda port: _launch(_command(data, out, max_steps, port, resume)),
                                      clashed=lambda r: r[0] != 0 and port_taken(r[1]))
    assert status == 0, output[-8000:]
    return output


def _metrics(out: Path, split: str = "train") -> dict[int, dict]:
    rows = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r for r in rows if r["split"] == split}


def _assert_same_steps(resumed: dict[int, dict], reference: dict[int, dict], steps: range) -> None:
    assert sorted(resumed) == list(steps), f"resumed run logged steps {sorted(resumed)}"
    for step in steps:
        for key in COMPARED:
            assert resumed[step][key] == pytest.approx(reference[step][key], rel=0, abs=1e-6), (step, key)


def _run_until_sigterm(data: Path, out: Path, port: int) -> str:
    """A long run that gets SIGTERM, to every process of the launch (as a cluster scheduler sends it), right
    after step STOP_AT: tests/training/sigterm_at_step.py sends it from rank 0 at that step. Its output."""
    cmd = _command(data, out, 10_000, port, script=HERE / "sigterm_at_step.py")
    _, output = _launch(cmd, env={"SIGTERM_AT_STEP": str(STOP_AT)})  # the launcher itself dies of SIGTERM
    return output


@pytest.fixture(scope="module")
def reference(token_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    _run(token_dir, out, TOTAL)
    return out


def test_two_rank_run_trains_and_exports(reference: Path) -> None:
    train = _metrics(reference)
    assert sorted(train) == list(range(1, TOTAL + 1))
    assert all(0 < train[s]["loss"] < 30 and train[s]["grad_norm"] > 0 for s in train)
    assert sorted(_metrics(reference, "val")) == [3, 6]
    assert latest_tag(reference / "checkpoints") == f"step_{TOTAL:08d}"
    ckpt = reference / "checkpoints" / "step_00000003"
    assert {p.name for p in ckpt.glob("train_state_rank*.pt")} == {"train_state_rank00000.pt",
                                                                    "train_state_rank00001.pt"}
    assert len(list(ckpt.glob("zero_pp_rank_*_optim_states.pt"))) == 2  # ZeRO-2 partitions
    assert (reference / "export" / "model.safetensors").is_file()


def test_resume_after_a_checkpoint_matches_the_uninterrupted_run(reference: Path, token_dir: Path,
                                                                 tmp_path: Path) -> None:
    # the run "crashed" right after its step-3 checkpoint: only that checkpoint survives
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "checkpoints" / "step_00000003", out / "checkpoints" / "step_00000003")
    (out / "checkpoints" / "latest").write_text("step_00000003\n")
    shutil.copy(reference / "tokenizer.model", out / "tokenizer.model")
    output = _run(token_dir, out, TOTAL, resume=True)
    assert "resumed from" in output
    _assert_same_steps(_metrics(out), _metrics(reference), range(4, TOTAL + 1))
    assert _metrics(out, "val")[6]["loss"] == pytest.approx(_metrics(reference, "val")[6]["loss"], abs=1e-6)


def test_sigterm_checkpoints_and_the_resumed_run_matches(reference: Path, token_dir: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "run"
    log_text = run_on_free_port(lambda port: _run_until_sigterm(token_dir, out, port),
                                clashed=lambda text: "step 1/10000" not in text and port_taken(text))
    assert "SIGTERM: stopping after this step with a checkpoint" in log_text, log_text[-3000:]
    assert f"stopped by SIGTERM at step {STOP_AT}; continue with --resume" in log_text, log_text[-3000:]
    assert latest_tag(out / "checkpoints") == f"step_{STOP_AT:08d}", log_text[-3000:]  # its own checkpoint
    ckpt = out / "checkpoints" / f"step_{STOP_AT:08d}"
    assert {p.name for p in ckpt.glob("train_state_rank*.pt")} == {"train_state_rank00000.pt",
                                                                    "train_state_rank00001.pt"}
    assert sorted(_metrics(out)) == list(range(1, STOP_AT + 1))  # no step after the stop
    assert not (out / "export").exists()  # an interrupted run does not export
    _run(token_dir, out, TOTAL, resume=True)
    # steps 1..STOP_AT from the stopped run, STOP_AT+1..TOTAL from the resumed one
    _assert_same_steps(_metrics(out), _metrics(reference), range(1, TOTAL + 1))
