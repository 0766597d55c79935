"""scripts/weight_parts.py: a model.safetensors split under a size limit joins back exactly (or in fp16)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import weight_parts  # noqa: E402


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(64, 64, generator=g) for i in range(5)} | {
        "step": torch.tensor([7], dtype=torch.int64)}


def test_split_respects_limit_and_joins_exactly(tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    save_file(_state(), source)
    parts = weight_parts.split(source, tmp_path / "parts" / "w", limit=40_000)  # two 16 KB tensors a part
    assert len(parts) == 3
    assert all(sum(t.numel() * t.element_size() for t in load_file(p).values()) <= 40_000 for p in parts)
    joined = weight_parts.join(tmp_path / "parts" / "w", tmp_path / "joined.safetensors")
    back, original = load_file(joined), _state()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_float16_halves_floats_and_keeps_integers(tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    save_file(_state(), source)
    weight_parts.split(source, tmp_path / "w", float16=True)
    back = load_file(weight_parts.join(tmp_path / "w", tmp_path / "joined.safetensors"))
    assert back["layer0.weight"].dtype == torch.float16
    assert torch.allclose(back["layer0.weight"].float(), _state()["layer0.weight"], atol=1e-3)
    assert back["step"].dtype == torch.int64 and back["step"].item() == 7


def test_cli_names_missing_parts_and_oversized_tensors(tmp_path: Path) -> None:
    run = [sys.executable, str(ROOT / "scripts" / "weight_parts.py")]
    missing = subprocess.run([*run, "join", str(tmp_path / "nothing"), str(tmp_path / "x.safetensors")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no parts" in missing.stderr
    source = tmp_path / "model.safetensors"
    save_file(_state(), source)
    with pytest.raises(ValueError, match="layer0.weight alone"):
        weight_parts.split(source, tmp_path / "w", limit=1000)
