"""scripts/average_exports.py: the averaged export holds the mean of the sources' weights, loads like any
export, and exports of another model config are refused with the file named."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from suite_helpers import build_tiny_export

from lm.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    path = ROOT / "scripts" / "average_exports.py"
    spec = importlib.util.spec_from_file_location("average_exports_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_average_is_the_mean_of_the_weights_and_loads(tmp_path: Path, capsys) -> None:
    a = build_tiny_export(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    weights = load_file(str(a / "model.safetensors"))
    shifted = {k: v + 1.0 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(shifted, str(b / "model.safetensors"), metadata={"format": "codectts-lm"})
    script = load_script()
    assert script.main(["--out", str(tmp_path / "soup"), str(a), str(b)]) == 0
    soup = load_file(str(tmp_path / "soup" / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    assert torch.allclose(soup[name], weights[name] + 0.5)
    meta = json.loads((tmp_path / "soup" / "config.json").read_text())["metadata"]
    assert meta["averaged_from"] == [str(a), str(b)]
    model = load_model(tmp_path / "soup")
    assert torch.allclose(model.state_dict()[name], soup[name])

    other = build_tiny_export(tmp_path / "other", alignment="phoneme")
    assert script.main(["--out", str(tmp_path / "bad"), str(a), str(other)]) == 1
    assert f"{other}: its model config differs" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written
