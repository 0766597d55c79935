"""Exact synthesiser timings travel with their clips: builder sidecar -> raw shard -> token shard -> batch.

Real engines, real WebDataset shards, a tiny real EnCodec-family codec (125 frames a second, so the frame
view is recomputed at a rate other than the aligner's 50 Hz).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.alignment.phones import PHONE_ID
from data_pipeline.alignment.schema import Alignment
from data_pipeline.corpus.synthetic_speech import SynthJob, build_synthetic_folder
from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.loading.loader import build_loader
from data_pipeline.records import REJECTS_FILE
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.tokenize import tokenize_shards

VOICES = [("flite", "slt", 1.0, 170.0), ("flite", "slt", 1.1, 170.0), ("espeak-ng", "en-us", 160.0, 50.0),
          ("espeak-ng", "en-us", 170.0, 50.0)]
TEXTS = ["The cat sat on the mat.", "Two dogs ran home at noon.", "A quiet river flows past the mill.",
         "Seven birds sang in the old tree."]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    jobs = [SynthJob(f"clip{i}", engine, voice, text, rate, pitch, speaker=voice)
            for i, (text, (engine, voice, rate, pitch)) in enumerate(zip(TEXTS, VOICES, strict=True))]
    assert build_synthetic_folder(jobs, out, 16000, workers=2)[0] == 4
    return out


def _members(shard_dir: Path, suffix: str) -> dict[str, bytes]:
    out = {}
    for shard in sorted(shard_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(suffix):
                    out[m.name[: -len(suffix)]] = tar.extractfile(m).read()
    return out


def test_exact_timings_reach_the_batches(synth_dir: Path, tiny_codec_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    summary = ingest(synth_dir, raw, IngestConfig(workers=0), progress=False)
    assert summary.accepted == 4
    raw_aligns = _members(raw, ".align.json")
    assert len(raw_aligns) == 4
    tok = tmp_path / "tok"
    run = tokenize_shards(raw, tok, TokenizeConfig(codec=str(tiny_codec_dir), align="exact", progress=False))
    assert run.written == 4 and run.aligned == 4
    metas = {k: json.loads(v) for k, v in _members(tok, ".json").items() if not k.endswith(".align")}
    aligns = {k: json.loads(v) for k, v in _members(tok, ".align.json").items()}
    assert set(aligns) == set(metas)
    for key, record in aligns.items():
        frames = metas[key]["num_frames"]
        assert record["num_frames"] == frames and record["frame_rate"] == metas[key]["frame_rate"] == 125.0
        assert sum(record["frame_durations"]) == frames
        assert len(record["frame_durations"]) == len(record["phone_ids"]) == len(record["phones"])
        assert min(record["frame_durations"]) >= 1
        exact = Alignment.from_json(json.loads(raw_aligns[key]))
        assert record["aligner"] == exact.aligner and "exact" in exact.aligner  # the engine's own timings
        assert [p["phone"] for p in record["phones"]] == [p.phone for p in exact.phones]

    loader = build_loader(str(tok), lambda s: list(s.encode()), infinite=False, min_seconds=0.5,
                          prompt_min_seconds=0.2, prompt_max_seconds=0.4)
    seen = 0
    for batch in loader:
        assert batch.frame_phones is not None and batch.frame_phones.shape == (len(batch.keys),
                                                                               int(batch.frame_lengths.max()))
        for i, key in enumerate(batch.keys):
            n = int(batch.frame_lengths[i])
            assert int(batch.phone_durations[i].sum()) == n  # frames per phone sum to the frames
            p = int(batch.phone_lengths[i])
            assert torch.equal(batch.frame_phones[i, :n],
                               torch.repeat_interleave(batch.phone_ids[i, :p], batch.phone_durations[i, :p]))
            assert bool((batch.frame_phones[i, n:] == 0).all())
            assert bool((batch.frame_phones[i, :n] >= PHONE_ID["pau"]).all())  # a real phone at every frame
            assert batch.prompt_phones.shape[1] == batch.prompt_codes.shape[2]
            assert aligns[key]["phone_ids"] == batch.phone_ids[i, : batch.phone_lengths[i]].tolist()
            seen += 1
    assert seen == 4

    off = tokenize_shards(raw, tmp_path / "tok_off", TokenizeConfig(codec=str(tiny_codec_dir), align="off",
                                                                    progress=False))
    assert off.written == 4 and off.aligned == 0 and not _members(tmp_path / "tok_off", ".align.json")


def test_a_sidecar_that_does_not_match_its_clip_is_rejected(synth_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in synth_dir.iterdir():
        (corpus / f.name).write_bytes(f.read_bytes())
    side = corpus / "clip1.align.json"
    record = json.loads(side.read_text())
    record["duration"] += 1.0
    side.write_text(json.dumps(record))
    (corpus / "clip2.align.json").write_text("{not json")
    summary = ingest(corpus, tmp_path / "raw", IngestConfig(workers=0), progress=False)
    assert summary.accepted == 2 and summary.reasons == {"bad_alignment": 2}
    rejects = [json.loads(line) for line in (tmp_path / "raw" / REJECTS_FILE).read_text().splitlines()]
    assert {Path(r["source"]).name for r in rejects} == {"clip1.flac", "clip2.flac"}
    assert all("align.json" in r["detail"] for r in rejects)  # the message names the sidecar


def test_loader_refuses_frames_that_do_not_sum(synth_dir: Path, tiny_codec_dir: Path, tmp_path: Path) -> None:
    from data_pipeline.loading.token_reader import decode_alignment

    record = {"phone_ids": [1, 5, 1], "frame_durations": [3, 4, 2]}
    ids, durations = decode_alignment(json.dumps(record).encode(), 9)
    assert list(np.repeat(ids, durations)) == [1, 1, 1, 5, 5, 5, 5, 1, 1]
    with pytest.raises(ValueError, match="sum to 9, the codes have 10 frames"):
        decode_alignment(json.dumps(record).encode(), 10)


def test_real_clips_are_force_aligned_and_misfits_rejected(tiny_codec_dir: Path, tmp_path: Path) -> None:
    """--align auto on real recordings without timings: the aligner writes their alignments, and a clip
    whose transcript belongs to another clip goes to rejects.jsonl with the reason, not into the shard."""
    arctic = Path(__file__).resolve().parents[2] / "tests" / "data" / "speech" / "cmu-arctic-sample"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = (arctic / "transcripts.tsv").read_text().splitlines()
    for line in lines[1:4]:
        name = line.split("\t")[0]
        (corpus / name).write_bytes((arctic / name).read_bytes())
    swapped = lines[3].split("\t")
    swapped[2] = lines[1].split("\t")[2]  # clip a0003 labelled with a0001's words
    rows = [lines[0], lines[1], lines[2], "\t".join(swapped)]
    (corpus / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    raw = tmp_path / "raw"
    assert ingest(corpus, raw, IngestConfig(workers=0), progress=False).accepted == 3
    tok = tmp_path / "tok"
    run = tokenize_shards(raw, tok, TokenizeConfig(codec=str(tiny_codec_dir), align="auto", progress=False))
    assert run.written == 2 and run.aligned == 2 and run.rejected == 1
    rejects = [json.loads(line) for line in (tok / REJECTS_FILE).read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["reason"] == "align_poor_fit" and "score" in rejects[0]["detail"]
    aligns = {k: json.loads(v) for k, v in _members(tok, ".align.json").items()}
    assert len(aligns) == 2 and rejects[0]["key"] not in aligns
    for record in aligns.values():
        assert record["aligner"].startswith("codectts-aligner") and record["score"] is not None
        assert sum(record["frame_durations"]) == record["num_frames"]
