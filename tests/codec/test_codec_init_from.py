"""`scripts/train_codec.py --init-from DIR`: a run that starts from an exported codec's weights (encoder,
codebooks with their EMA state, decoder) at step 0 with a fresh optimizer, refuses a different config, and
gives way to its own checkpoint on --resume."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from codec.training.audio_pool import load_clips

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech"
ARCTIC_DIR = SPEECH / "cmu-arctic-sample"
EVAL_CLIP = SPEECH / "ljspeech-sample" / "LJ001-0002.wav"


def main(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("script_train_codec", ROOT / "scripts" / "train_codec.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.main(argv)


def _tiny_config(**overrides) -> RVQCodecConfig:
    return RVQCodecConfig(**{**dict(architecture="spectral", dimension=16, spectral_dim=32, encoder_layers=1,
                                    decoder_layers=2, num_codebooks=4, codebook_size=32, kmeans_iters=2,
                                    threshold_ema_dead_code=0.0), **overrides})


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """An exported tiny codec whose codebooks are k-means-initialised and EMA-updated (not fresh)."""
    torch.manual_seed(0)
    codec = RVQCodec(_tiny_config()).train()
    with torch.no_grad():
        codec(torch.randn(2, 1, 3200) * 0.1)
    assert bool(codec.quantizer.layers[0]._codebook.initted)
    directory = tmp_path_factory.mktemp("src") / "codec"
    codec.save_pretrained(directory, dtype=torch.float32)
    return directory


def _args(out: Path, source: Path, steps: int) -> list[str]:
    return ["--data", str(ARCTIC_DIR), "--out", str(out), "--init-from", str(source),
            "--max-steps", str(steps),
            "--batch-size", "2", "--segment-seconds", "0.4", "--lr", "1e-3", "--warmup-steps", "1",
            "--log-every", "1", "--eval-every", "1000", "--ckpt-every", "1000", "--device", "cpu"]


def test_step_zero_equals_the_export_and_training_runs(source, tmp_path) -> None:
    exported = load_file(str(source / "model.safetensors"))
    # 0 steps: the checkpoint the trainer writes is the initial state
    assert main([*_args(tmp_path / "zero", source, 0), "--eval-data", str(EVAL_CLIP),
                 "--eval-codebooks", "2"]) == 0
    start = load_file(str(tmp_path / "zero" / "ckpt" / "model.safetensors"))
    assert start.keys() == exported.keys()
    for k, v in exported.items():
        assert torch.equal(start[k], v), k
    assert any(k.endswith("initted") for k in start) and any("embed_avg" in k for k in start)
    state = json.loads((tmp_path / "zero" / "ckpt" / "state.json").read_text())
    assert state["step"] == 0 and state["init_from"] == str(source)
    first_eval = json.loads((tmp_path / "zero" / "metrics.jsonl").read_text().splitlines()[0])
    assert first_eval["step"] == 0 and {"eval_mel", "eval_mel_q2"} <= first_eval.keys()
    best = json.loads((tmp_path / "zero" / "best" / "training.json").read_text())
    assert best["step"] == 0 and best["best_by"] == "stoi"
    assert (tmp_path / "zero" / "best" / "config.json").is_file()

    # 2 steps: a fresh optimizer at step 0 trains on, the codebooks are not re-initialised by k-means
    assert main(_args(tmp_path / "two", source, 2)) == 0
    after = load_file(str(tmp_path / "two" / "ckpt" / "model.safetensors"))
    trainer = torch.load(tmp_path / "two" / "ckpt" / "trainer.pt", weights_only=True)
    assert all(int(s["step"]) == 2 for s in trainer["optimizer"]["state"].values())
    changed = [k for k in exported if not torch.equal(after[k], exported[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    embed = next(k for k in exported if k.endswith("_codebook.embed"))
    moved = (after[embed] - exported[embed]).norm(dim=-1)  # per code: EMA steps, not a new k-means
    assert moved.median() < 0.1 * exported[embed].norm(dim=-1).median()
    assert all(bool(after[k]) for k in after if k.endswith("initted"))
    log = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]

    # --resume finds the run's own checkpoint and goes on from step 2 (the export is not loaded again)
    assert main([*_args(tmp_path / "two", source, 3), "--resume"]) == 0
    state = json.loads((tmp_path / "two" / "ckpt" / "state.json").read_text())
    assert state["step"] == 3 and state["init_from"] == str(source)


def test_a_different_config_is_refused(source, tmp_path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**_tiny_config().to_dict(), "decoder_layers": 3}))
    with pytest.raises(ValueError, match="decoder_layers: run 3 vs export 2"):
        main([*_args(tmp_path / "run", source, 1), "--codec-config", str(other)])
    with pytest.raises(ValueError, match="num_codebooks"):
        main([*_args(tmp_path / "run", source, 1), "--num-codebooks", "2"])
    with pytest.raises(FileNotFoundError, match="not a codec export"):
        main(_args(tmp_path / "run", tmp_path / "nowhere", 1))
    assert not (tmp_path / "run" / "ckpt").exists()


def test_files_still_being_written_are_skipped(tmp_path) -> None:
    shutil.copy(EVAL_CLIP, tmp_path / "a.wav")
    shutil.copy(EVAL_CLIP, tmp_path / "b.tmp.wav")
    assert len(load_clips(tmp_path, 16000)) == 1
