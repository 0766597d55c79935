"""Ingest: real clips in, WebDataset shards + rejects + summary out."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import webdataset as wds

from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest, make_key
from data_pipeline.ingest.sources import detect_format
from data_pipeline.records import RAW_SHARD_PATTERN, REJECTS_FILE, RawMeta

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"
LJ = SPEECH / "ljspeech-sample"
ARCTIC = SPEECH / "cmu-arctic-sample"
RAW_FIELDS = {f.name for f in fields(RawMeta)}


def read_shards(out_dir: Path) -> dict[str, dict]:
    """Every sample of the raw shards, read back through webdataset (key -> {audio, sr, meta})."""
    shards = sorted(out_dir.glob("raw-*.tar"))
    samples = {}
    for sample in wds.WebDataset([str(s) for s in shards], shardshuffle=False):
        key = sample["__key__"]
        assert key not in samples, f"key {key} appears twice"
        assert set(sample) - {"__url__", "__local_path__"} == {"__key__", "flac", "json"}
        with sf.SoundFile(io.BytesIO(sample["flac"])) as f:
            subtype = f.subtype
            audio = f.read(dtype="int32", always_2d=True)
            sr = f.samplerate
        samples[key] = {"audio": audio, "sr": sr, "subtype": subtype, "meta": json.loads(sample["json"])}
    return samples


def lj_transcripts() -> dict[str, tuple[str, str]]:
    with open(LJ / "transcripts.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {r["file"]: (r["transcript"], r["speaker"]) for r in rows}


@pytest.fixture(scope="module")
def lj_ingest(tmp_path_factory):
    out = tmp_path_factory.mktemp("lj")
    # Workers > 0 so that the multiprocessing path is the one tested on real data.
    summary = ingest(LJ, out, IngestConfig(workers=2), progress=False)
    return out, summary


def test_ljspeech_manifest_every_clip_once_exact(lj_ingest):
    out, summary = lj_ingest
    expected = lj_transcripts()
    assert summary.format == "manifest"
    assert (summary.total, summary.accepted, summary.rejected) == (33, 33, 0)
    assert (out / REJECTS_FILE).read_text() == ""
    samples = read_shards(out)
    assert sorted(samples) == sorted(Path(f).stem for f in expected)
    for key, s in samples.items():
        original, sr = sf.read(LJ / f"{key}.wav", dtype="int32", always_2d=True)
        meta = s["meta"]
        assert set(meta) == RAW_FIELDS  # exactly the schema in records.py
        assert RawMeta(**meta).to_dict() == meta
        assert (meta["text"], meta["speaker"]) == expected[f"{key}.wav"]
        assert meta["sample_rate"] == sr == s["sr"] == 22050
        assert meta["duration"] == pytest.approx(original.shape[0] / sr, abs=1e-6)
        assert Path(meta["source"]) == (LJ / f"{key}.wav").absolute()
        assert s["subtype"] == "PCM_16"
        np.testing.assert_array_equal(s["audio"], original)  # lossless, sample for sample
    hours = sum(s["meta"]["duration"] for s in samples.values()) / 3600
    assert summary.accepted_hours == pytest.approx(hours, abs=1e-4)
    assert json.loads((out / "summary.json").read_text()) == summary.to_dict()


def _speech(seconds: float | None = None) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(LJ / "LJ001-0002.wav", dtype="int16")  # 1.9 s of real speech
    return (audio if seconds is None else audio[: int(seconds * sr)]), sr


def test_folder_with_txt_and_lab(tmp_path):
    src = tmp_path / "corpus"
    (src / "alice").mkdir(parents=True)
    (src / "bob" / "session1").mkdir(parents=True)
    speech, sr = _speech()
    sf.write(src / "alice" / "a1.wav", speech, sr, subtype="PCM_16")
    (src / "alice" / "a1.txt").write_text("Hello there.\n")
    # 24-bit FLAC input: must come back as 24-bit, bit-exact.
    arctic, arctic_sr = sf.read(ARCTIC / "cmu_arctic_us_aew_a0001.wav", dtype="int32")
    sf.write(src / "bob" / "session1" / "b.1.flac", arctic, arctic_sr, subtype="PCM_24")
    (src / "bob" / "session1" / "b.1.lab").write_text("Author of the danger trail.")
    sf.write(src / "alice" / "no_text.wav", speech, sr)  # no transcript next to it

    assert detect_format(src) == "folder"
    out = tmp_path / "out"
    summary = ingest(src, out, IngestConfig(workers=0), progress=False)
    samples = read_shards(out)
    assert sorted(samples) == ["alice__a1", "bob__session1__b_1"]
    a, b = samples["alice__a1"], samples["bob__session1__b_1"]
    assert (a["meta"]["text"], a["meta"]["speaker"]) == ("Hello there.", "alice")
    assert (b["meta"]["text"], b["meta"]["speaker"]) == ("Author of the danger trail.", "session1")
    np.testing.assert_array_equal(a["audio"][:, 0], speech.astype(np.int32) << 16)
    assert b["subtype"] == "PCM_24" and b["sr"] == arctic_sr
    np.testing.assert_array_equal(b["audio"][:, 0], arctic)
    rejects = [json.loads(line) for line in (out / REJECTS_FILE).read_text().splitlines()]
    assert [(Path(r["source"]).name, r["reason"]) for r in rejects] == [("no_text.wav", "missing_transcript")]
    assert summary.reasons == {"missing_transcript": 1} and summary.speakers == 2


def _write_bad_corpus(root: Path) -> dict[str, str | None]:
    """One folder with good and bad items; returns file name -> expected reject reason (None = accepted)."""
    root.mkdir()
    speech, sr = _speech()
    expected: dict[str, str | None] = {}

    def add(name: str, reason: str | None, text: str | bytes = "A real sentence.") -> Path:
        expected[name] = reason
        stem = root / Path(name).stem
        if text is not None:
            stem.with_suffix(".txt").write_bytes(text if isinstance(text, bytes) else text.encode())
        return root / name

    sf.write(add("good.wav", None), speech, sr)
    stereo = torchaudio.functional.resample(torch.from_numpy(speech / 32768.0).float(), sr, 44100).numpy()
    stereo = np.stack([stereo, 0.5 * stereo], axis=1)
    sf.write(add("stereo44k.wav", None), stereo, 44100, subtype="PCM_16")
    sf.write(add("float32.wav", None), speech / 32768.0, sr, subtype="FLOAT")
    add("corrupt.wav", "unreadable").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(2000))
    add("empty.wav", "empty_file").write_bytes(b"")
    sf.write(add("silent.wav", "silent"), np.zeros(2 * sr, dtype=np.int16), sr)
    sf.write(add("short.wav", "too_short"), speech[: int(0.1 * sr)], sr)
    long_speech = np.concatenate([speech] * 4)  # 7.6 s > max_seconds below
    sf.write(add("long.wav", "too_long"), long_speech, sr)
    nan = (speech / 32768.0).astype(np.float32)
    nan[1000:1010] = np.nan
    sf.write(add("nan.wav", "non_finite"), nan, sr, subtype="FLOAT")
    loud = np.clip(speech.astype(np.int32) * 30, -32768, 32767).astype(np.int16)
    sf.write(add("clipped.wav", "clipped"), loud, sr)
    sf.write(add("empty_text.wav", "empty_transcript", text="  \n\t "), speech, sr)
    sf.write(add("punct_text.wav", "empty_transcript", text="... !"), speech, sr)
    sf.write(add("bad_utf8.wav", "bad_transcript_encoding", text=b"caf\xe9 \xff\xfe"), speech, sr)
    sf.write(add("no_text.wav", "missing_transcript", text=None), speech, sr)
    (root / "notes.md").write_text("not audio, ignored")
    return expected


def test_bad_inputs_rejected_good_ones_kept(tmp_path):
    expected = _write_bad_corpus(tmp_path / "bad")
    out = tmp_path / "out"
    cfg = IngestConfig(workers=0, max_seconds=5.0, min_seconds=0.5, log_rejects=0)
    summary = ingest(tmp_path / "bad", out, cfg, progress=False)

    good = sorted(Path(n).stem for n, r in expected.items() if r is None)
    samples = read_shards(out)
    assert sorted(samples) == good
    rejects = [json.loads(line) for line in (out / REJECTS_FILE).read_text().splitlines()]
    assert all(r["detail"] for r in rejects)
    got = {Path(r["source"]).name: r["reason"] for r in rejects}
    assert got == {n: r for n, r in expected.items() if r is not None}

    bad = [r for r in expected.values() if r is not None]
    assert (summary.total, summary.accepted, summary.rejected) == (len(expected), len(good), len(bad))
    assert summary.reasons == {r: bad.count(r) for r in set(bad)}
    assert json.loads((out / "summary.json").read_text())["reasons"] == summary.reasons

    st = samples["stereo44k"]
    assert st["sr"] == 44100 and st["audio"].shape[1] == 2  # stereo and the rate are kept
    stereo_src, _ = sf.read(tmp_path / "bad" / "stereo44k.wav", dtype="int32")
    np.testing.assert_array_equal(st["audio"], stereo_src)
    assert st["meta"]["duration"] == pytest.approx(len(stereo_src) / 44100, abs=1e-6)
    # Float input is stored as 24-bit FLAC: equal within half a 24-bit step.
    fl = samples["float32"]
    src_float, _ = sf.read(tmp_path / "bad" / "float32.wav", dtype="float64")
    assert fl["subtype"] == "PCM_24"
    np.testing.assert_allclose(fl["audio"][:, 0] / 2.0**31, src_float, atol=2.0**-24)


def test_shard_size_bound_and_reproducible(tmp_path, lj_ingest):
    bound_mb = 0.5
    out = tmp_path / "small"
    summary = ingest(LJ, out, IngestConfig(workers=0, shard_size_mb=bound_mb), progress=False)
    shards = sorted(out.glob("raw-*.tar"))
    assert [s.name for s in shards] == [RAW_SHARD_PATTERN % i for i in range(len(shards))]
    assert len(shards) > 5 and not list(out.glob("*.tmp"))
    assert [s["name"] for s in summary.shards] == [s.name for s in shards]
    for shard, info in zip(shards, summary.shards, strict=True):
        assert shard.stat().st_size == info["bytes"]
        # A clip bigger than the bound (LJ001-0001 is ~0.5 MB of FLAC) may only sit alone in its shard.
        assert info["bytes"] <= bound_mb * 2**20 or info["samples"] == 1, info
    assert sum(s["samples"] for s in summary.shards) == 33
    assert sorted(read_shards(out)) == sorted(read_shards(lj_ingest[0]))
    # Same input -> byte-identical shards; an existing output is refused unless overwrite.
    before = [s.read_bytes() for s in shards]
    with pytest.raises(FileExistsError):
        ingest(LJ, out, IngestConfig(workers=0, shard_size_mb=bound_mb), progress=False)
    ingest(LJ, out, IngestConfig(workers=0, shard_size_mb=bound_mb, overwrite=True), progress=False)
    assert [s.read_bytes() for s in sorted(out.glob("raw-*.tar"))] == before


def _copy_clip(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def test_ljspeech_and_libritts_layouts(tmp_path):
    lj = tmp_path / "LJSpeech-1.1"
    _copy_clip(LJ / "LJ001-0001.wav", lj / "wavs" / "LJ001-0001.wav")
    _copy_clip(LJ / "LJ001-0002.wav", lj / "wavs" / "LJ001-0002.wav")
    (lj / "metadata.csv").write_text(
        "LJ001-0001|Printing, in 1 sense|Printing, in one sense\nLJ001-0002|in being modern.|\n"
        "LJ009-9999|this clip is missing|this clip is missing\n"
    )
    assert detect_format(lj) == "ljspeech"
    summary = ingest(lj, tmp_path / "lj_out", IngestConfig(workers=0), progress=False)
    samples = read_shards(tmp_path / "lj_out")
    assert {k: s["meta"]["text"] for k, s in samples.items()} == {
        "LJ001-0001": "Printing, in one sense",  # the normalized column when there is one
        "LJ001-0002": "in being modern.",
    }
    assert summary.reasons == {"missing_audio": 1}

    libri = tmp_path / "LibriTTS" / "train-clean-100"
    for i, clip in enumerate(sorted(ARCTIC.glob("*.wav"))[:3]):
        spk = "103" if i < 2 else "1034"
        stem = f"{spk}_1240_000001_00000{i}"
        _copy_clip(clip, libri / spk / "1240" / f"{stem}.wav")
        (libri / spk / "1240" / f"{stem}.original.txt").write_text(f"Original {i}.")
        if i != 1:
            (libri / spk / "1240" / f"{stem}.normalized.txt").write_text(f"Normalized {i}.")
    assert detect_format(libri.parent) == "libritts"
    summary = ingest(libri.parent, tmp_path / "libri_out", IngestConfig(workers=0), progress=False)
    samples = read_shards(tmp_path / "libri_out")
    got = {k: (s["meta"]["speaker"], s["meta"]["text"]) for k, s in samples.items()}
    assert got == {
        "103_1240_000001_000000": ("103", "Normalized 0."),
        "103_1240_000001_000001": ("103", "Original 1."),
        "1034_1240_000001_000002": ("1034", "Normalized 2."),
    }


def test_jsonl_and_csv_manifests(tmp_path):
    clips = sorted(ARCTIC.glob("*.wav"))
    audio_dir = tmp_path / "audio"
    for c in clips[:3]:
        _copy_clip(c, audio_dir / c.name)
    rows = [
        {"audio_filepath": f"audio/{clips[0].name}", "text": "First one.", "speaker_id": 7},
        {"audio_filepath": f"audio/{clips[1].name}", "text": "Second one."},
        {"audio_filepath": f"audio/{clips[0].name}", "text": "Listed twice."},
        {"audio_filepath": "audio/missing.wav", "text": "Gone."},
        {"audio_filepath": f"audio/{clips[2].name}", "text": ""},
    ]
    lines = [json.dumps(r) for r in rows[:2]] + ["{not json"] + [json.dumps(r) for r in rows[2:]]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    summary = ingest(tmp_path / "manifest.jsonl", tmp_path / "out", IngestConfig(workers=0), progress=False)
    samples = read_shards(tmp_path / "out")
    got = sorted((s["meta"]["text"], s["meta"]["speaker"]) for s in samples.values())
    assert got == [("First one.", "7"), ("Second one.", "audio")]  # no speaker column -> folder name
    assert summary.reasons == {
        "bad_manifest_row": 1,
        "duplicate": 1,
        "missing_audio": 1,
        "empty_transcript": 1,
    }

    # CSV with quoted commas, columns named differently, auto-detected from the folder.
    csv_dir = tmp_path / "csvset"
    _copy_clip(clips[3], csv_dir / "wav" / "x.wav")
    (csv_dir / "metadata.csv").write_text('path,speaker,sentence\nwav/x.wav,spk,"Yes, it works."\n')
    assert detect_format(csv_dir) == "manifest"
    ingest(csv_dir, tmp_path / "out2", IngestConfig(workers=0), progress=False)
    (only,) = read_shards(tmp_path / "out2").values()
    assert (only["meta"]["text"], only["meta"]["speaker"]) == ("Yes, it works.", "spk")

    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no audio-path or transcript column"):
        ingest(tmp_path / "bad.csv", tmp_path / "out3", IngestConfig(workers=0), progress=False)


def test_keys_are_webdataset_safe_and_unique():
    used: set[str] = set()
    keys = [make_key(h, used) for h in ["a/b.c/d.e", "a/b_c/d_e", "é/ü.wav", "x" * 200, "", "a/b.c/d.e"]]
    assert len(set(keys)) == len(keys)
    for k in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,90}", k), k


def load_script(name: str):
    """Import scripts/<name>.py (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(tmp_path, capsys):
    main = load_script("ingest").main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--shard-size-mb" in capsys.readouterr().out
    out = tmp_path / "cli"
    assert main(["--input", str(ARCTIC), "--output", str(out), "--workers", "0", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "6 accepted, 0 rejected" in printed
    assert {s["meta"]["speaker"] for s in read_shards(out).values()} == {"arctic-aew", "arctic-axb"}
    assert main(["--input", str(ARCTIC), "--output", str(out), "--quiet"]) == 2  # exists, no --overwrite


def test_common_voice_style_tsv_and_unrelated_table_in_folder(tmp_path):
    clips = sorted(ARCTIC.glob("*.wav"))
    cv = tmp_path / "cv"
    _copy_clip(clips[0], cv / "clips" / "cv_1.wav")  # Common Voice: paths relative to clips/
    (cv / "validated.tsv").write_text('client_id\tpath\tsentence\nabc123\tcv_1.wav\tA "quoted" line.\n')
    ingest(cv / "validated.tsv", tmp_path / "cv_out", IngestConfig(workers=0), progress=False)
    (only,) = read_shards(tmp_path / "cv_out").values()
    assert (only["meta"]["text"], only["meta"]["speaker"]) == ('A "quoted" line.', "abc123")

    folder = tmp_path / "folder"
    _copy_clip(clips[1], folder / "spk" / "u.wav")
    (folder / "spk" / "u.txt").write_text("Some words.")
    (folder / "spk" / "metadata.csv").write_text("a,b\n1,2\n")  # not a transcript table: ignored
    summary = ingest(
        folder, tmp_path / "folder_out", IngestConfig(workers=0, format="folder"), progress=False
    )
    assert summary.accepted == 1


def test_worker_crash_rejects_only_that_item(tmp_path, monkeypatch):
    """A decoder that kills its process (segfault, OOM kill) must not hang or end the run."""
    import data_pipeline.ingest.validate as validate_module

    real_read_audio = validate_module.read_audio

    def crashing_read_audio(path, *args, **kwargs):
        if path.name == "crash.wav":
            os._exit(3)  # what a segfaulting decoder looks like from the outside
        return real_read_audio(path, *args, **kwargs)

    # Workers are forked, so they inherit the patched function.
    monkeypatch.setattr(validate_module, "read_audio", crashing_read_audio)
    src = tmp_path / "spk"
    src.mkdir()
    speech, sr = _speech()
    names = [f"u{i:02d}" for i in range(20)] + ["crash"]
    for name in names:
        sf.write(src / f"{name}.wav", speech, sr)
        (src / f"{name}.txt").write_text(f"Utterance {name}.")
    cfg = IngestConfig(workers=2, start_method="fork")
    summary = ingest(src, tmp_path / "out", cfg, progress=False)
    assert sorted(read_shards(tmp_path / "out")) == sorted(n for n in names if n != "crash")
    assert summary.reasons == {"worker_crashed": 1}
    (reject,) = [json.loads(line) for line in (tmp_path / "out" / REJECTS_FILE).read_text().splitlines()]
    assert Path(reject["source"]).name == "crash.wav"


def test_config_is_validated():
    with pytest.raises(ValueError, match="min_seconds"):
        IngestConfig(min_seconds=5, max_seconds=1)
    with pytest.raises(ValueError, match="format"):
        IngestConfig(format="mp3")


def test_shard_count_limit_is_spread_evenly(tmp_path):
    """33 clips at most 10 a shard: 4 shards of 9/8/8/8, not 10/10/10/3 (the last shard is the default
    validation set, and a remainder shard would make it tiny)."""
    out = tmp_path / "raw"
    summary = ingest(LJ, out, IngestConfig(workers=1, shard_max_count=10), progress=False)
    counts = [s["samples"] for s in summary.shards]
    assert sum(counts) == summary.accepted
    assert len(counts) == math.ceil(summary.total / 10)
    assert max(counts) - min(counts) <= 1, counts
