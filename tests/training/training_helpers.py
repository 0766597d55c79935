"""Helpers for the training tests. Token shards: real WebDataset tars in the token-shard schema, written
with the tokenizer's own writer. Transcripts and speakers are the repository's real clips
(tests/data/speech); the codes are random (the tests check training mechanics, not speech)."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from data_pipeline.records import TokenMeta
from data_pipeline.tokens.token_shards import token_sample, write_shard_atomically

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech"
CODEC = "encodec_24khz:random@1.5"  # a real codec spec: 2 codebooks x 1024 at 75 Hz
FRAME_RATE = 75.0
NUM_CODEBOOKS = 2
CODEBOOK_SIZE = 1024

# Small batches of short utterances, so a step of the tiny model takes a few tens of milliseconds.
FAST_OVERRIDES = [
    "data.batching.max_frames=700",
    "data.batching.min_seconds=0.5",
    "data.batching.max_seconds=2.0",
    "data.batching.prompt_min_seconds=0.4",
    "data.batching.prompt_max_seconds=0.8",
    "data.shuffle_buffer=16",
    "tokenizer.vocab_size=400",
    "log.tensorboard=false",
]


def transcripts() -> list[tuple[str, str]]:
    """(speaker, transcript) of every clip in tests/data/speech."""
    with open(SPEECH / "MANIFEST.tsv", newline="") as f:
        return [(row["speaker"], row["transcript"]) for row in csv.DictReader(f, delimiter="\t")]


def write_token_shards(out: Path, num_shards: int = 5, per_shard: int = 16, seed: int = 0) -> list[Path]:
    """`num_shards` token shards of `per_shard` utterances (0.6-1.8 s of random codes each)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = transcripts()
    paths = []
    for s in range(num_shards):
        samples = []
        for i in range(per_shard):
            n = s * per_shard + i
            speaker, text = rows[n % len(rows)]
            frames = int(rng.integers(45, 136))
            codes = rng.integers(0, CODEBOOK_SIZE, (NUM_CODEBOOKS, frames)).astype(np.int16)
            meta = TokenMeta(text=text, speaker=speaker, duration=frames / FRAME_RATE, sample_rate=24000,
                             source=f"tests/data/speech/{n}", codec=CODEC, frame_rate=FRAME_RATE,
                             num_frames=frames, num_codebooks=NUM_CODEBOOKS,
                             extra={"codebook_size": CODEBOOK_SIZE})
            samples.append(token_sample(f"s{s:03d}-u{n:05d}", codes, meta))
        path = out / f"tokens-{s:06d}.tar"
        write_shard_atomically(path, samples)
        paths.append(path)
    return paths


def run_script(args: list[str], launcher: list[str] | None = None, timeout: float = 300,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run scripts/train.py (optionally under a launcher) from the repository root."""
    cmd = (launcher or [sys.executable]) + [str(ROOT / "scripts" / "train.py"), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


def script_main(name: str):
    """A script's `main(argv)`, imported (in this process: no second start-up of torch and the codec)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def launch_all(cmds: list[list[str]], env: dict | None = None, timeout: float = 300) -> list[tuple[int, str]]:
    """Start every command at once (the processes of one job: one launcher per simulated node), each in its
    own process group, and wait for all -> [(exit status, output)]. Past `timeout` every group still
    running is killed and the outputs so far are returned with status -9: no rank outlives the test."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, env=full_env) for cmd in cmds]
    deadline = time.monotonic() + timeout
    results = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, output))
        except subprocess.TimeoutExpired:
            for other in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(other.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=60)
            results.append((-9, output + f"\n[killed after {timeout} s]"))
    return results
