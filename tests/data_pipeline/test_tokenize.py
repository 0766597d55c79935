"""Tokenize real speech (ingest -> raw shards -> token shards -> loader) with real EnCodec modules.

Fast tests use a tiny EnCodec-family model saved as a codec checkpoint directory (the same class and
loading path as the full model); the `integration` ones run the full-size random 24 kHz EnCodec on the
LJSpeech sample and kill a real tokenize process mid-run.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.loading.loader import build_loader
from data_pipeline.loading.token_reader import LoaderStats, read_token_shard
from data_pipeline.records import REJECTS_FILE
from data_pipeline.sharding import process_place
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.tokenize import SUMMARY_DIR, owned_shards, tokenize_shards

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO / "tests" / "data" / "speech"


def raw_keys(raw_dir: Path) -> set[str]:
    keys = set()
    for shard in raw_dir.glob("*.tar"):
        with tarfile.open(shard) as tar:
            keys |= {m.name.split(".")[0] for m in tar.getmembers()}
    return keys


def token_contents(tok_dir: Path) -> dict[str, list]:
    """key -> [(codes, meta), ...] over all token shards (a list, so duplicates would show)."""
    out: dict[str, list] = {}
    stats = LoaderStats()
    for shard in sorted(tok_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            metas = {m.name[:-len(".json")]: json.loads(tar.extractfile(m).read())
                     for m in tar.getmembers() if m.name.endswith(".json")}
        for utt in read_token_shard(str(shard), stats):
            out.setdefault(utt.key, []).append((utt.codes, metas[utt.key]))
    assert stats.corrupt == 0
    return out


@pytest.fixture(scope="module")
def arctic_raw(tmp_path_factory) -> Path:
    """The 6 CMU Arctic clips (2 speakers), 2 clips per raw shard."""
    out = tmp_path_factory.mktemp("arctic") / "raw"
    summary = ingest(SPEECH / "cmu-arctic-sample", out, IngestConfig(shard_max_count=2, workers=0),
                     progress=False)
    assert summary.accepted == 6 and len(summary.shards) == 3
    return out


@pytest.fixture(scope="module")
def arctic_tokens(tmp_path_factory, arctic_raw, tiny_codec_dir) -> Path:
    out = tmp_path_factory.mktemp("arctic") / "tokens"
    # both clips of a shard in one padded forward, so the batched path is what gets checked
    cfg = TokenizeConfig(codec=str(tiny_codec_dir), batch_seconds=60, max_padding=0.9, progress=False)
    run = tokenize_shards(arctic_raw, out, cfg)
    assert (run.shards, run.done, run.written, run.rejected, run.forwards) == (3, 3, 6, 0, 3)
    return out


def test_token_shards_hold_every_clip_with_consistent_codes_and_metadata(arctic_raw, arctic_tokens,
                                                                         tiny_codec_dir):
    assert sorted(p.name for p in arctic_tokens.glob("*.tar")) == [f"tokens-00000{i}.tar" for i in range(3)]
    contents = token_contents(arctic_tokens)
    assert set(contents) == raw_keys(arctic_raw)
    for key, [(codes, meta)] in contents.items():
        assert codes.dtype == np.int16 and codes.shape == (4, meta["num_frames"])
        assert abs(meta["num_frames"] - meta["duration"] * meta["frame_rate"]) <= 1, key
        assert meta["frame_rate"] == 125.0 and meta["num_codebooks"] == 4
        assert meta["codec"] == str(tiny_codec_dir) and meta["speaker"].startswith("arctic-")
        assert meta["text"] and meta["sample_rate"] == 16000 and meta["source"].endswith(".wav")
        assert meta["extra"]["codebook_size"] == 64 and meta["extra"]["source_shard"].startswith("raw-")
        assert 0 <= codes.min() and codes.max() < 64
    summaries = sorted((arctic_tokens / SUMMARY_DIR).glob("*.json"))
    assert [json.loads(p.read_text())["written"] for p in summaries] == [2, 2, 2]


@pytest.mark.parametrize("variant,settings,forwards", [
    ("one clip per forward, one clip per window", dict(batch_seconds=0, window_seconds=1), 6),
    ("long-clip path (chunked encode_long)", dict(long_clip_seconds=1.0), 6),
])
def test_batched_codes_match_other_encoding_paths(tmp_path, arctic_raw, arctic_tokens, tiny_codec_dir,
                                                  variant, settings, forwards):
    cfg = TokenizeConfig(codec=str(tiny_codec_dir), progress=False, **settings)
    run = tokenize_shards(arctic_raw, tmp_path / "other", cfg)
    assert run.forwards == forwards, variant
    batched, other = token_contents(arctic_tokens), token_contents(tmp_path / "other")
    same = total = 0
    for key, [(codes, _)] in batched.items():
        [(ref, _)] = other[key]
        assert codes.shape == ref.shape
        same, total = same + int((codes == ref).sum()), total + codes.size
    assert same / total >= 0.99  # padding never changes the codes (float noise may flip a rare argmin)


def test_loader_reads_the_token_shards_with_cross_utterance_prompts(arctic_tokens, arctic_raw):
    loader = build_loader(str(arctic_tokens), lambda s: list(s.encode()), infinite=False, min_seconds=0.5,
                          max_seconds=10.0, max_frames=4000, prompt_min_seconds=1.0)
    keys, crops = Counter(), 0
    for batch in loader:
        keys.update(batch.keys)
        crops += int(batch.prompt_is_crop.sum())
        for key, prompt_key, speaker in zip(batch.keys, batch.prompt_keys, batch.speakers, strict=True):
            assert prompt_key != key and speaker.startswith("arctic-")
    assert set(keys) == raw_keys(arctic_raw) and set(keys.values()) == {1}
    assert crops == 0  # both speakers have three utterances: a prompt is never the target itself


def test_rerun_after_a_kill_skips_finished_shards_and_redoes_the_rest(tmp_path, arctic_raw, arctic_tokens,
                                                                      tiny_codec_dir):
    out = tmp_path / "tokens"
    shutil.copytree(arctic_tokens, out)
    # what a kill during shard 1 leaves behind: no final shard, a half-written temporary one
    (out / "tokens-000001.tar").unlink()
    (out / SUMMARY_DIR / "tokens-000001.json").unlink()
    (out / "tokens-000001.tar.tmp").write_bytes(b"half a tar")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    run = tokenize_shards(arctic_raw, out, TokenizeConfig(codec=str(tiny_codec_dir), progress=False))
    assert (run.skipped, run.done, run.written) == (2, 1, 2)
    assert not list(out.glob("*.tmp"))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p.name in before} == before
    contents = token_contents(out)
    assert set(contents) == raw_keys(arctic_raw) and all(len(v) == 1 for v in contents.values())


def test_bad_clips_and_broken_shards_are_rejected_not_fatal(tmp_path, arctic_raw, tiny_codec_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    with tarfile.open(arctic_raw / "raw-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    good = sorted({n.split(".")[0] for n in members})[0]
    samples = [(good, members[f"{good}.flac"], members[f"{good}.json"]),
               ("garbage-audio", b"this is not flac", members[f"{good}.json"]),
               ("no-meta", members[f"{good}.flac"], None),
               ("bad-meta", members[f"{good}.flac"], b'{"text": "only text"}')]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, flac, meta in samples:
            for ext, data in (("flac", flac), ("json", meta)):
                if data is not None:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (raw / "raw-000000.tar").write_bytes(buf.getvalue())
    (raw / "raw-000001.tar").write_bytes(buf.getvalue()[:1000])  # truncated inside the first flac
    run = tokenize_shards(raw, tmp_path / "tok", TokenizeConfig(codec=str(tiny_codec_dir), progress=False))
    assert run.done == 2 and run.written == 1
    rejects = [json.loads(line) for line in (tmp_path / "tok" / REJECTS_FILE).read_text().splitlines()]
    by_key = {(r["shard"], r["key"]): r for r in rejects}
    for key in ("garbage-audio", "no-meta", "bad-meta"):
        assert by_key[("raw-000000.tar", key)]["reason"] == "decode_failed"
    assert any(r["shard"] == "raw-000001.tar" for r in rejects)
    assert run.rejected == len(rejects)
    assert list(token_contents(tmp_path / "tok")) == [good]


def test_shard_ownership_is_disjoint_and_complete(monkeypatch):
    shards = [f"raw-{i:06d}.tar" for i in range(23)]
    owned = [s for r in range(2) for w in range(3) for s in owned_shards(shards, r, 2, w, 3)]
    assert sorted(owned) == shards
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_place() == process_place(3, 4)
    assert process_place().local_rank == 1


def test_cli_help(capsys):
    path = REPO / "scripts" / "tokenize_shards.py"
    spec = importlib.util.spec_from_file_location("tokenize_shards_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "--batch-frames" in capsys.readouterr().out
    args = cli.parse_args(["--input", "raw", "--output", "tok", "--local_rank=3"])  # as deepspeed launches it
    assert args.local_rank == 3 and args.batch_seconds is None


# ---- integration ---------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "tokenize_shards.py"), "--quiet", *args]


def _lj_subset(tmp_path: Path, count: int) -> Path:
    """The `count` shortest LJSpeech-sample clips as a folder corpus with its transcripts.tsv."""
    src = SPEECH / "ljspeech-sample"
    rows = (src / "transcripts.tsv").read_text().splitlines()
    chosen = sorted(rows[1:], key=lambda r: (src / r.split("\t")[0]).stat().st_size)[:count]
    out = tmp_path / "lj"
    out.mkdir()
    for row in chosen:
        shutil.copy(src / row.split("\t")[0], out)
    (out / "transcripts.tsv").write_text("\n".join([rows[0], *chosen]) + "\n")
    return out


@pytest.mark.integration
@pytest.mark.parametrize("corpus,codec_spec,num_codebooks,frame_rate", [
    ("all", "tiny", 4, 125.0),  # all 33 clips through a small random EnCodec-family model
    (8, "encodec_24khz:random", 8, 75.0),  # the 8 shortest through the full-size random 24 kHz EnCodec
])
def test_ljspeech_sample_end_to_end(tmp_path, tiny_codec_dir, corpus, codec_spec, num_codebooks, frame_rate):
    """The issue's "done when": ingest -> tokenize (random EnCodec) -> loader, nothing lost."""
    source = SPEECH / "ljspeech-sample" if corpus == "all" else _lj_subset(tmp_path, corpus)
    spec = str(tiny_codec_dir) if codec_spec == "tiny" else codec_spec
    raw, tok = tmp_path / "raw", tmp_path / "tok"
    summary = ingest(source, raw, IngestConfig(shard_max_count=5, workers=0), progress=False)
    assert summary.accepted == (33 if corpus == "all" else corpus)
    run = tokenize_shards(raw, tok, TokenizeConfig(codec=spec, progress=False))
    assert (run.written, run.rejected) == (summary.accepted, 0)
    contents = token_contents(tok)
    assert set(contents) == raw_keys(raw)
    for key, [(codes, meta)] in contents.items():
        assert codes.shape == (num_codebooks, meta["num_frames"]) and meta["frame_rate"] == frame_rate
        assert abs(meta["num_frames"] - meta["duration"] * frame_rate) <= 1, key
    loader = build_loader(str(tok), lambda s: list(s.encode()), infinite=False, max_frames=8000,
                          max_seconds=15.0)
    keys = Counter(k for batch in loader for k in batch.keys)
    assert set(keys) == set(contents) and set(keys.values()) == {1}
    assert loader.stats.samples == summary.accepted and loader.stats.corrupt == 0


class _Lines:
    """The lines of a process's output pipe, read by a thread, so waiting for one has a deadline."""

    def __init__(self, stream) -> None:
        self.stream, self.queue, self.seen = stream, queue.Queue(), []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self.queue.put(line)
        self.queue.put(None)  # end of stream

    def wait_for(self, pattern: str, count: int, timeout: float) -> list[str]:
        """The first `count` lines that match `pattern`; fails after `timeout` s or at the end of the
        stream."""
        matched, deadline = [], time.monotonic() + timeout
        while len(matched) < count:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = "<timeout>"
            if line in (None, "<timeout>"):
                pytest.fail(f"{len(matched)} of {count} lines matching {pattern!r}, then "
                            f"{'a timeout' if line else 'the end'}: {''.join(self.seen)[-2000:]}")
            self.seen.append(line)
            if re.search(pattern, line):
                matched.append(line)
        return matched

    def close(self) -> None:
        """After the writer is gone: the thread reads to the end, then the pipe is closed."""
        self.thread.join(timeout=60)
        self.stream.close()


@pytest.mark.integration
def test_killed_tokenize_process_resumes_without_duplicates(tmp_path, tiny_codec_dir):
    """A real tokenize process, SIGKILLed at a known point: raw shard 5 is a named pipe that nobody writes,
    so the process finishes shards 0-4 and then waits for ever to read shard 5. Once it has logged shard 4
    it is killed; the rerun (shard 5 a real file again) tokenizes the other 12 and keeps the 5."""
    raw, tok = tmp_path / "raw", tmp_path / "tok"
    ingest(SPEECH / "ljspeech-sample", raw, IngestConfig(shard_max_count=2, workers=0), progress=False)
    assert len(list(raw.glob("*.tar"))) == 17
    held, kept = raw / "raw-000005.tar", tmp_path / "raw-000005.tar"
    held.rename(kept)
    os.mkfifo(held)
    spec = str(raw / "raw-{000000..000016}.tar")  # the directory form lists regular files only
    # --align off: the kill and the rerun are the subject here, not phone alignments (no aligner needed)
    cmd = _cli("--input", spec, "--output", str(tok), "--codec", str(tiny_codec_dir), "--align", "off")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = _Lines(proc.stderr)
    try:
        logged = log.wait_for(r"-> tokens-\d{6}\.tar: ", count=5, timeout=240)  # one line per shard
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    first_five = [f"tokens-{i:06d}" for i in range(5)]
    assert [re.search(r"tokens-\d{6}", line).group() for line in logged] == first_five
    assert sorted(p.name for p in tok.glob("*.tar")) == [f"tokens-{i:06d}.tar" for i in range(5)]
    held.unlink()
    kept.rename(held)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "12 tokenized, 5 already done" in done.stdout
    contents = token_contents(tok)
    assert set(contents) == raw_keys(raw) and all(len(v) == 1 for v in contents.values())
    assert not list(tok.glob("*.tmp"))


@pytest.mark.integration
def test_local_worker_processes_split_the_shards(tmp_path, arctic_raw, tiny_codec_dir):
    cfg = TokenizeConfig(codec=str(tiny_codec_dir), num_workers=2, progress=False)
    run = tokenize_shards(arctic_raw, tmp_path / "tok", cfg)
    assert (run.shards, run.done, run.written) == (3, 3, 6)
    contents = token_contents(tmp_path / "tok")
    assert set(contents) == raw_keys(arctic_raw) and all(len(v) == 1 for v in contents.values())
