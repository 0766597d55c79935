"""Channel-perturbed corpus copies (data_pipeline/corpus/channel_perturb.py): real flite clips with their
exact timings, copied through fixed per-pseudo-speaker channels, ingested and tokenized."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_pipeline.alignment.schema import sidecar_path
from data_pipeline.corpus.channel_perturb import apply_channel, channel_corpus_dir
from data_pipeline.corpus.synthetic_speech import SynthJob, build_synthetic_folder
from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.tokenize import tokenize_shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    jobs = [SynthJob(k, "flite", "slt", text, 1.0, 170.0, speaker="slt")
            for k, text in (("a", "The cat sat on the mat."), ("b", "Two dogs ran home at noon."),
                            ("c", "A quiet river flows past the mill."), ("d", "Seven birds sang."))]
    assert build_synthetic_folder(jobs, out, 16000, workers=1)[0] == 4
    return out


def test_a_channel_is_fixed_by_its_name_and_differs_from_another() -> None:
    rate = 16000
    speech_like = np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.1
    one = apply_channel(speech_like, rate, "slt_ch0")
    assert one.shape == speech_like.shape and np.abs(one).max() <= 0.99
    np.testing.assert_array_equal(one, apply_channel(speech_like, rate, "slt_ch0"))
    others = [apply_channel(speech_like, rate, f"slt_ch{k}") for k in range(1, 5)]
    assert all(not np.allclose(one, o, atol=1e-3) for o in others)
    assert not np.allclose(one, apply_channel(speech_like, rate, "slt_ch0", seed=1), atol=1e-3)


def test_copies_keep_their_timings_and_share_a_channel_per_pseudo_speaker(corpus: Path, tmp_path: Path,
                                                                          tiny_codec_dir: Path) -> None:
    dst = tmp_path / "ch" / "synth_ch"
    clips = channel_corpus_dir(corpus, dst, channels=2, seed=0)
    assert len(clips) == 4 and {c.speaker for c in clips} <= {"slt_ch0", "slt_ch1"}
    for clip in clips:
        assert clip.detail == clip.speaker and clip.file.endswith(f"_{clip.speaker[-3:]}.flac")
        source = corpus / f"{clip.file.rsplit('_ch', 1)[0]}.flac"
        wav, rate = sf.read(dst / clip.file, dtype="float32")
        original, _ = sf.read(source, dtype="float32")
        assert len(wav) == len(original) and not np.allclose(wav, original, atol=1e-3)
        # the same source through the copy's channel again gives the same audio (FLAC is lossless at 16 bit)
        np.testing.assert_allclose(wav, apply_channel(original, rate, clip.speaker), atol=1e-4)
        assert json.loads(sidecar_path(dst / clip.file).read_text()) == json.loads(
            sidecar_path(source).read_text())

    stamp = {p: p.stat().st_mtime_ns for p in dst.glob("*.flac")}
    assert channel_corpus_dir(corpus, dst, channels=2, seed=0) == clips  # a rerun keeps what is there
    assert {p: p.stat().st_mtime_ns for p in dst.glob("*.flac")} == stamp

    raw = tmp_path / "raw"
    assert ingest(dst.parent, raw, IngestConfig(workers=0), progress=False).accepted == 4
    run = tokenize_shards(raw, tmp_path / "tok", TokenizeConfig(codec=str(tiny_codec_dir), align="exact",
                                                                progress=False))
    assert run.written == 4 and run.aligned == 4


def perturb_main(argv: list[str]) -> int:
    """scripts/perturb_corpus.py's main (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "perturb_corpus.py"
    spec = importlib.util.spec_from_file_location("script_perturb_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_the_script_reports_a_bad_clip_by_name(corpus: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "transcripts.tsv").write_text("file\tspeaker\ttranscript\nmissing.flac\ts\thello\n")
    assert perturb_main(["--kind", "channel", "--input", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "missing.flac: cannot read the clip" in capsys.readouterr().err
    assert perturb_main(["--kind", "channel", "--input", str(corpus), "--out", str(tmp_path / "ok"),
                         "--channels", "3"]) == 0
    assert "4 clips" in capsys.readouterr().out
