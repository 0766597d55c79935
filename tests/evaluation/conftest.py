"""Shared fixtures: the real metric models (loaded once per session) and the repo's real speech clips."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
try:
    import evaluation  # noqa: F401
except ImportError:  # an editable install made before the evaluation package existed
    sys.path.insert(0, str(ROOT))

SPEECH = ROOT / "tests" / "data" / "speech"
REPO_LIST = ROOT / "evaluation" / "lists" / "repo_speech.lst"


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    return SPEECH


@pytest.fixture(scope="session")
def repo_list() -> Path:
    return REPO_LIST


@pytest.fixture(scope="session")
def scorers():
    """Whisper tiny.en + resemblyzer + DNSMOS, all from their wheels, loaded once for every test."""
    from evaluation.runner import Scorers

    return Scorers.load()
