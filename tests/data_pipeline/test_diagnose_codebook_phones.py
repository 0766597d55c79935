"""scripts/diagnose_codebook_phones.py on real token shards: a codebook that names the phone scores high
accuracy and low nats on new voices; random codes score chance and ~log(K); --leave-one-out adds a row per
training voice."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
K = 64


def _script():
    spec = importlib.util.spec_from_file_location("diag_cb", ROOT / "scripts" / "diagnose_codebook_phones.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_shard(folder: Path, speakers: list[str], phonetic: bool, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with tarfile.open(folder / "tokens-000000.tar", "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for n in range(12):
            speaker = speakers[n % len(speakers)]
            phone_ids = rng.integers(2, 30, size=10)
            durations = rng.integers(2, 6, size=10)
            frames = np.repeat(phone_ids, durations)
            code1 = frames * 2 + (n % len(speakers)) % 2 if phonetic else rng.integers(0, K, size=len(frames))
            codes = np.stack([code1, rng.integers(0, K, size=len(frames))]).astype(np.int16)
            key = f"{speaker}_{n:03d}"
            buf = io.BytesIO()
            np.save(buf, codes)
            add(f"{key}.codes.npy", buf.getvalue())
            meta = {"text": "a b", "speaker": speaker, "num_codebooks": 2, "num_frames": len(frames),
                    "frame_rate": 50.0, "extra": {"codebook_size": K}}
            add(f"{key}.json", json.dumps(meta).encode())
            add(f"{key}.align.json", json.dumps({"phone_ids": phone_ids.tolist(),
                                                 "frame_durations": durations.tolist()}).encode())
    return folder


def test_phonetic_codes_transfer_and_random_codes_do_not(tmp_path: Path, capsys) -> None:
    train = _write_shard(tmp_path / "train", ["a", "b"], phonetic=True, seed=0)
    same_kind = _write_shard(tmp_path / "new_voices", ["c", "d"], phonetic=True, seed=1)
    random = _write_shard(tmp_path / "random", ["e"], phonetic=False, seed=2)
    out = tmp_path / "rows.json"
    assert _script().main(["--train", str(train), "--test", str(same_kind), "--test", str(random),
                           "--codebooks", "2", "--leave-one-out", "--json", str(out)]) == 0
    rows = {(r["test"], r["codebook"]): r for r in json.loads(out.read_text())}
    good, bad = rows[(str(same_kind), 1)], rows[(str(random), 1)]
    # code = 2 x phone + the voice's parity; c and d share a's and b's parities (a few of their phones
    # never occur in the train shard)
    assert good["phone_acc"] > 0.85 and good["code_nll"] < good["code_nll_train"] + 0.6
    assert bad["phone_acc"] < 0.2 and bad["code_nll"] > math.log(K) - 0.5
    assert rows[(str(same_kind), 2)]["phone_acc"] < 0.2  # codebook 2 is noise in both
    left_out = sorted(t for t, q in rows if t.startswith("left out") and q == 1)
    assert left_out == ["left out: a", "left out: b"]
    # leaving a voice out leaves its parity unseen: its codes name no phone (the voice-dependent case)
    assert all(rows[(t, 1)]["phone_acc"] < 0.1 for t in left_out)
    assert "phone_acc" in capsys.readouterr().out


def test_unaligned_shards_are_refused(tmp_path: Path) -> None:
    train = _write_shard(tmp_path / "train", ["a"], phonetic=True, seed=0)
    with tarfile.open(train / "tokens-000000.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()
                   if not m.name.endswith("align.json")]
    bare = tmp_path / "bare"
    bare.mkdir()
    with tarfile.open(bare / "tokens-000000.tar", "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(SystemExit, match="no alignment"):
        _script().main(["--train", str(bare), "--test", str(train)])
