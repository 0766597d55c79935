"""The suite's own machinery: the per-test timeout, free ports for distributed runs (tests/suite_helpers.py),
and the DeepSpeed cleanup of tests/conftest.py."""

from __future__ import annotations

import datetime
import inspect
import signal
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import suite_helpers
import torch.distributed as dist
from suite_helpers import DEEPSPEED_RELEASE, deepspeed_group_release, port_taken, run_on_free_port

ROOT = Path(__file__).resolve().parents[1]


# ---- the per-test timeout ----------------------------------------------------------------------------------
def test_every_test_runs_under_the_pyproject_timeout(request: pytest.FixtureRequest) -> None:
    """pytest-timeout arms SIGALRM before each test (setup included) with pyproject's `timeout`: a test
    that hangs fails after it instead of stalling the run."""
    assert request.config.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed"
    assert request.config.inipath == ROOT / "pyproject.toml"
    configured = float(request.config.getini("timeout") or 0)
    assert configured >= 300, "pyproject.toml sets no generous `timeout`"  # slow tests take minutes
    remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 0 < remaining <= configured, f"no timer armed for this test ({remaining} s left)"


# ---- free ports --------------------------------------------------------------------------------------------
@pytest.fixture
def squatter():
    """A port another process took between our choosing it and binding it (the race), listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def first_candidate(monkeypatch, squatter) -> int:
    """The first port run_on_free_port chooses is the squatted one; later ones are really free."""
    ports = iter([squatter])
    real = suite_helpers.candidate_port
    monkeypatch.setattr(suite_helpers, "candidate_port", lambda: next(ports, None) or real())
    return squatter


def test_a_store_whose_port_was_taken_binds_another(first_candidate: int) -> None:
    tried = []

    def launch(port: int) -> dist.TCPStore:  # what init_process_group does on rank 0
        tried.append(port)
        return dist.TCPStore("127.0.0.1", port, world_size=1, is_master=True,
                             timeout=datetime.timedelta(seconds=30))

    store = run_on_free_port(launch)
    assert tried[0] == first_candidate and len(tried) == 2 and tried[1] != first_candidate
    assert store.port == tried[1]
    store.set("key", "value")
    assert store.get("key") == b"value"


def test_a_launched_process_whose_port_was_taken_is_started_again(first_candidate: int) -> None:
    """The `deepspeed` launcher case: the clash shows in the child's output, not as an exception here."""
    bind = "import socket, sys; socket.socket().bind(('127.0.0.1', int(sys.argv[1])))"
    runs = []

    def launch(port: int) -> subprocess.CompletedProcess:
        runs.append(subprocess.run([sys.executable, "-c", bind, str(port)], capture_output=True, text=True,
                                   timeout=60))
        return runs[-1]

    proc = run_on_free_port(launch, clashed=lambda p: p.returncode != 0 and port_taken(p.stderr))
    assert proc.returncode == 0 and len(runs) == 2
    assert runs[0].returncode != 0 and "Address already in use" in runs[0].stderr


def test_other_failures_are_not_retried() -> None:
    calls = []

    def launch(port: int):
        calls.append(port)
        raise ValueError("bad config")

    with pytest.raises(ValueError, match="bad config"):
        run_on_free_port(launch)
    assert len(calls) == 1
    # a port that stays taken: the last attempt's result goes back to the caller, who reports it
    assert run_on_free_port(lambda port: "clash", clashed=lambda _: True, attempts=3) == "clash"


# ---- DeepSpeed's private cleanup ---------------------------------------------------------------------------
def test_the_installed_deepspeed_has_the_private_group_release() -> None:
    from deepspeed.utils import groups

    release = deepspeed_group_release(groups)
    assert release is getattr(groups, DEEPSPEED_RELEASE)
    assert "group" in inspect.signature(release).parameters  # tests/conftest.py calls it with group=None


def test_a_renamed_group_release_fails_naming_it() -> None:
    renamed = types.ModuleType("deepspeed.utils.groups")
    with pytest.raises(RuntimeError, match=r"deepspeed\.utils\.groups\._release_process_group_references"):
        deepspeed_group_release(renamed)
