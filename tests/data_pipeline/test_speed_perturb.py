"""Speed-perturbed corpus copies (data_pipeline/corpus/speed_perturb.py): real flite / espeak-ng clips with
their exact timings, perturbed, ingested and tokenized with the timings still fitting the audio."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_pipeline.alignment.schema import Alignment, sidecar_path
from data_pipeline.corpus.speed_perturb import perturb, perturb_corpus_dir, pick_factor
from data_pipeline.corpus.synthetic_speech import SynthJob, build_synthetic_folder
from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.tokenize import tokenize_shards

FACTORS = (0.9, 1.15)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    jobs = [SynthJob("a", "flite", "slt", "The cat sat on the mat.", 1.0, 170.0, speaker="slt"),
            SynthJob("b", "flite", "slt", "Two dogs ran home at noon.", 1.0, 170.0, speaker="slt"),
            SynthJob("c", "espeak-ng", "en-us", "A quiet river flows past the mill.", 160.0, 50.0,
                     speaker="en-us"),
            SynthJob("d", "espeak-ng", "en-us", "Seven birds sang in the old tree.", 160.0, 50.0,
                     speaker="en-us")]
    assert build_synthetic_folder(jobs, out, 16000, workers=1)[0] == 4
    return out


def test_a_perturbed_tone_is_higher_and_shorter() -> None:
    rate = 16000
    tone = np.sin(2 * np.pi * 200.0 * np.arange(rate) / rate).astype(np.float32)
    out = perturb(tone, rate, 1.15)
    assert abs(len(out) - rate / 1.15) <= 2
    peak = np.argmax(np.abs(np.fft.rfft(out))) * rate / len(out)
    assert abs(peak - 230.0) < 3.0
    assert pick_factor("x.flac", FACTORS, 0) == pick_factor("x.flac", FACTORS, 0)
    assert {pick_factor(f"{i}.flac", FACTORS, 0) for i in range(40)} == set(FACTORS)


def test_copies_keep_their_timings_and_make_new_voices(corpus: Path, tmp_path: Path, tiny_codec_dir: Path
                                                      ) -> None:
    dst = tmp_path / "sp" / "synth_sp"
    clips = perturb_corpus_dir(corpus, dst, FACTORS, seed=0)
    with open(corpus / "transcripts.tsv", newline="") as f:
        source = {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert len(clips) == len(source) == 4
    for clip, (name, row) in zip(clips, source.items(), strict=True):
        assert clip.speaker == f"{row['speaker']}_sp{clip.detail:.2f}"
        assert clip.transcript == row["transcript"]
        wav, rate = sf.read(dst / clip.file)
        original, _ = sf.read(corpus / name)
        assert abs(len(wav) - len(original) / clip.detail) <= 2
        before = Alignment.from_json(json.loads(sidecar_path(corpus / name).read_text()))
        after = Alignment.from_json(json.loads(sidecar_path(dst / clip.file).read_text()))
        assert after.duration == pytest.approx(len(wav) / rate, abs=2e-4)
        assert [p.phone for p in after.phones] == [p.phone for p in before.phones]
        assert after.phones[3].end == pytest.approx(before.phones[3].end / clip.detail)
        assert after.extra["speed_perturbed"] == clip.detail

    stamp = {p: p.stat().st_mtime_ns for p in dst.glob("*.flac")}
    assert perturb_corpus_dir(corpus, dst, FACTORS, seed=0) == clips  # a rerun keeps what is there
    assert {p: p.stat().st_mtime_ns for p in dst.glob("*.flac")} == stamp

    raw = tmp_path / "raw"
    assert ingest(dst.parent, raw, IngestConfig(workers=0), progress=False).accepted == 4
    run = tokenize_shards(raw, tmp_path / "tok", TokenizeConfig(codec=str(tiny_codec_dir), align="exact",
                                                                progress=False))
    assert run.written == 4 and run.aligned == 4  # the scaled timings fit the perturbed audio


def test_a_bad_listing_or_clip_names_the_file(corpus: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "transcripts.tsv").write_text("name\ttext\nx.flac\thello\n")
    with pytest.raises(ValueError, match=r"bad/transcripts.tsv: expected a header"):
        perturb_corpus_dir(bad, tmp_path / "out")
    (bad / "transcripts.tsv").write_text("file\tspeaker\ttranscript\nmissing.flac\ts\thello\n")
    with pytest.raises(ValueError, match=r"missing.flac: cannot read the clip"):
        perturb_corpus_dir(bad, tmp_path / "out")
