"""scripts/finetune_lora.py end to end on real LJ Speech clips (a folder of wav + .txt files) with a tiny
random model and the random EnCodec: ingest -> split -> tokenize -> DeepSpeed LoRA training with
evaluations (Whisper tiny.en + resemblyzer) -> adapter, curve, samples; then generate.py --adapter,
merge_lora.py, and the wrong-base refusal. Also two CPU ranks under the `deepspeed` launcher.

The model is untrained, so these tests check the recipe's plumbing and bookkeeping, never the voice."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from suite_helpers import port_taken, run_on_free_port
from training_helpers import ROOT, SPEECH, script_main

from data_pipeline.text.tokenizer import TextTokenizer
from lm.adapters.lora import CurvePoint, select_best
from lm.model.config import get_preset
from lm.model.model import TTSModel
from lm.training.export import export_inference_dir

# a minute or more on 2 CPU cores (Whisper + resemblyzer loading, two DeepSpeed processes): `make test-slow`
pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUM_CLIPS = 8  # the shortest LJ clips: 5 to train on, 3 held out
FAST = ["--rank", "4", "--alpha", "8", "--max-frames", "400", "--prompt-seconds", "2", "--seed", "3"]


def run(script: str, args: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable]), str(ROOT / "scripts" / script), *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def tiny_export(directory: Path, seed: int) -> Path:
    texts = []
    for tsv in sorted(SPEECH.glob("*/transcripts.tsv")):
        with tsv.open() as f:
            texts += [row["transcript"] for row in csv.DictReader(f, delimiter="\t")]
    tokenizer_path = directory.with_name(directory.name + "-text.model")
    tokenizer = TextTokenizer.train(texts, tokenizer_path, vocab_size=400)
    config = get_preset("tiny", text_vocab_size=tokenizer.vocab_size)
    torch.manual_seed(seed)
    return export_inference_dir(directory, config, TTSModel(config).state_dict(), tokenizer_path,
                                "encodec_24khz:random")


@pytest.fixture(scope="module")
def voice_folder(tmp_path_factory) -> Path:
    """One speaker's recordings as a user has them: audio files with a .txt transcript beside each."""
    folder = tmp_path_factory.mktemp("voice") / "lj"
    folder.mkdir()
    with open(SPEECH / "MANIFEST.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["set"] == "ljspeech-sample"]
    for row in sorted(rows, key=lambda r: float(r["duration_s"]))[:NUM_CLIPS]:
        audio = SPEECH / row["file"]
        shutil.copy(audio, folder / audio.name)
        (folder / audio.name).with_suffix(".txt").write_text(row["transcript"] + "\n")
    return folder


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return tiny_export(tmp_path_factory.mktemp("base") / "export", seed=0)


@pytest.fixture(scope="module")
def finetuned(export, voice_folder, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("lora") / "run"
    proc = run("finetune_lora.py", ["--checkpoint", export, "--data", voice_folder, "--out", out, *FAST,
                                    "--max-steps", "4", "--eval-every", "2", "--patience", "0",
                                    "--eval-sentences", "2", "--eval-max-seconds", "1.0"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out, proc


def read_pcm(path: Path) -> np.ndarray:
    """generate.py's output as written (16-bit PCM), for exact comparisons."""
    samples, rate = sf.read(path, dtype="int16")
    assert rate == 24000 and len(samples) > 0
    return samples


def token_keys(shard: Path) -> set[str]:
    with tarfile.open(shard) as tar:
        return {name.split(".")[0] for name in tar.getnames()}


def test_finetune_splits_trains_evaluates_and_keeps_the_best_adapter(finetuned) -> None:
    out, proc = finetuned
    split = json.loads((out / "data" / "split.json").read_text())
    train, held = {c["key"] for c in split["train"]}, {c["key"] for c in split["heldout"]}
    assert len(train) == NUM_CLIPS - 3 and len(held) == 3 and not train & held
    tokenized = set().union(*(token_keys(p) for p in (out / "data" / "tokens").glob("*.tar")))
    assert tokenized == train  # the held-out clips never reach a training shard

    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [0, 2, 4]
    assert curve[0]["train_loss"] is None and all(p["train_loss"] > 0 for p in curve[1:])
    assert all(-1 <= p["sim"] <= 1 and 0 <= p["wer"] for p in curve)
    assert all(len(p["extra"]["cases"]) == 2 for p in curve)
    for step in (0, 2, 4):
        assert len(list((out / "samples" / f"step_{step:05d}").glob("*.wav"))) == 2
    table = (out / "curve.md").read_text().splitlines()
    assert table[0].startswith("| step | train loss | SIM | WER %") and len(table) == 5
    assert sum(line.endswith("| * |") for line in table) == 1

    points = [CurvePoint(p["step"], p["sim"], p["wer"]) for p in curve]
    best = points[select_best(points, wer_margin=0.05, patience=0).best]
    kept = json.loads((out / "adapter" / "base_model.json").read_text())
    assert kept["step"] == best.step and kept["sim"] == pytest.approx(best.sim)
    assert kept["lora"]["rank"] == 4 and len(kept["fingerprint"]) == 64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "max_steps" and summary["best"]["step"] == best.step
    assert 0 < summary["adapter_share"] < 1 and summary["evaluation"]["cases"] == [c["key"] for c in
                                                                                    curve[0]["extra"]["cases"]]
    assert summary["evaluation"]["prompt"] in train
    assert "% of the model" in proc.stdout and "zero-shot" in proc.stdout


def test_generate_uses_the_adapter_and_merge_writes_a_standalone_model(finetuned, export, tmp_path,
                                                                        capsys) -> None:
    out, _ = finetuned
    generate, merge = script_main("generate"), script_main("merge_lora")
    prompt = SPEECH / "ljspeech-sample" / "LJ001-0002.wav"
    common = ["--prompt-audio", str(prompt), "--text", "Printing is an art.", "--seed", "1",
              "--max-seconds", "0.3", "--threads", "1"]
    assert generate(["--checkpoint", str(export), "--adapter", str(out / "adapter"), *common,
                     "--out", str(tmp_path / "adapted.wav")]) == 0
    assert (tmp_path / "adapted.wav").stat().st_size > 1000

    assert merge(["--checkpoint", str(export), "--adapter", str(out / "adapter"),
                  "--out", str(tmp_path / "merged")]) == 0
    assert "% of the model" in capsys.readouterr().out
    merged = ["--checkpoint", str(tmp_path / "merged"), *common, "--out", str(tmp_path / "m.wav")]
    assert generate(merged) == 0
    # the merged export generates what base + adapter generates (same seed: the same samples)
    assert np.array_equal(read_pcm(tmp_path / "m.wav"), read_pcm(tmp_path / "adapted.wav"))

    other = tiny_export(tmp_path / "other", seed=1)
    capsys.readouterr()
    assert generate(["--checkpoint", str(other), "--adapter", str(out / "adapter"), *common,
                     "--out", str(tmp_path / "never.wav")]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "never.wav").exists()
    assert f"was made for base model {export}" in err and str(other) in err


def test_two_ranks_under_the_deepspeed_launcher(export, voice_folder, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["--checkpoint", export, "--data", voice_folder, "--out", out, *FAST, "--max-steps", "3",
            "--eval-every", "0", "--lr", "1e-2"]

    deepspeed = str(Path(sys.executable).parent / "deepspeed")

    def launch(port: int) -> subprocess.CompletedProcess:
        return run("finetune_lora.py", args, [deepspeed, "--num_gpus", "2", "--master_port", str(port)])

    # started again on another port if the port was taken before rank 0 bound it (nothing written yet)
    proc = run_on_free_port(launch, clashed=lambda p: p.returncode != 0 and port_taken(p.stdout + p.stderr))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert len(list((out / "data" / "tokens").glob("*.tar"))) == 2  # one training shard per rank
    kept = json.loads((out / "adapter" / "base_model.json").read_text())
    assert kept["step"] == 3
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(float(w.abs().max()) > 0 for w in lora_b)  # trained: B left zero
    assert not (out / "curve.jsonl").exists()

    # the trained adapter (3 steps at --lr 1e-2) changes what generate.py says for a fixed seed, and
    # merge_lora.py's export says exactly what base + adapter says
    generate, merge = script_main("generate"), script_main("merge_lora")
    common = ["--prompt-audio", str(SPEECH / "ljspeech-sample" / "LJ001-0002.wav"), "--text",
              "Printing is an art.", "--seed", "1", "--max-seconds", "0.3", "--threads", "1"]
    wavs = {}
    for name, args in (("base", ["--checkpoint", export]),
                       ("adapted", ["--checkpoint", export, "--adapter", out / "adapter"])):
        assert generate([*map(str, args), *common, "--out", str(tmp_path / f"{name}.wav")]) == 0
        wavs[name] = read_pcm(tmp_path / f"{name}.wav")
    assert len(wavs["adapted"]) == len(wavs["base"]) and not np.array_equal(wavs["adapted"], wavs["base"])
    assert merge(["--checkpoint", str(export), "--adapter", str(out / "adapter"),
                  "--out", str(tmp_path / "merged")]) == 0
    assert generate(["--checkpoint", str(tmp_path / "merged"), *common,
                     "--out", str(tmp_path / "merged.wav")]) == 0
    assert np.array_equal(read_pcm(tmp_path / "merged.wav"), wavs["adapted"])
