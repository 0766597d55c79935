"""Fixtures of the training tests (helpers in training_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import write_token_shards


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train-data") / "tokens"
    write_token_shards(out)
    return out
