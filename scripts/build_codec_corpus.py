#!/usr/bin/env python
"""Build the codec training corpus (16 kHz mono FLAC), reproducibly and licence-clean.

    apt-get install -y espeak-ng flite
    python scripts/build_codec_corpus.py --out data/codec_corpus

Layout written:
    OUT/real/<set>/*.flac + transcripts.tsv   real speech from --speech-root, minus every evaluation clip
    OUT/synth/espeak/*.flac + transcripts.tsv  espeak-ng voices x rates x pitches reading --sentences
    OUT/synth/flite/*.flac  + transcripts.tsv  flite voices (kal16, awb, rms, slt, kal)
    OUT/CORPUS.md                              sizes, exclusions, licences, the command

Evaluation clips never enter the corpus: every audio file under --exclude-dir (default tests/data/speech, the
repo's evaluation speech) and every clip named in --exclude-list files (evaluation lists) is left out by name.
Re-running keeps finished clips, so a killed build resumes.
"""

from __future__ import annotations

import argparse
import csv
import glob
import logging
import math
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from codec.audio import AudioReadError, load_audio, resample, to_mono
from data_pipeline.corpus.synthetic_speech import (
    ENGINE_LICENCES,
    build_synthetic_folder,
    plan_jobs,
    read_sentences,
)
from data_pipeline.ingest.sources import is_audio_file

log = logging.getLogger("build_codec_corpus")
ROOT = Path(__file__).resolve().parents[1]
# Average clip length measured on a sample of the sentences (seconds); sets how many jobs a target needs.
EST_SECONDS = {"espeak-ng": 5.7, "flite": 6.0}


def excluded_names(exclude_dirs: list[Path], exclude_lists: list[str]) -> set[str]:
    """Stems of every evaluation clip: all audio under the dirs, every wav named in the lists."""
    names = {p.stem for d in exclude_dirs if d.is_dir() for p in d.rglob("*") if is_audio_file(p)}
    for pattern in exclude_lists:
        for list_path in sorted(glob.glob(pattern)):
            for line in Path(list_path).read_text(encoding="utf-8").splitlines():
                fields = line.strip().split("|")
                if line.strip().startswith("#") or len(fields) < 4:
                    continue
                names.update(Path(f.strip()).stem for f in (fields[2], *fields[4:5]) if f.strip())
    return names


def copy_real(speech_root: Path, out_dir: Path, exclude: set[str], sample_rate: int) -> tuple[int, float]:
    """Resample every non-excluded clip under speech_root/<set>/ to mono FLAC; carry transcripts along."""
    count, total = 0, 0.0
    for set_dir in sorted(p for p in speech_root.iterdir() if p.is_dir()):
        transcripts = {}
        tsv = set_dir / "transcripts.tsv"
        if tsv.is_file():
            with open(tsv, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    transcripts[Path(row["file"]).stem] = (row.get("speaker", ""), row.get("transcript", ""))
        rows = []
        for path in sorted(p for p in set_dir.iterdir() if is_audio_file(p)):
            if path.stem in exclude:
                continue
            target = out_dir / set_dir.name / f"{path.stem}.flac"
            try:
                wav, sr = load_audio(path)
            except AudioReadError as e:
                log.warning("skipped %s", e)
                continue
            wav = resample(to_mono(wav), sr, sample_rate)[0].numpy()
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(target), np.clip(wav, -1, 1), sample_rate, subtype="PCM_16")
            speaker, text = transcripts.get(path.stem, (set_dir.name, ""))
            rows.append((target.name, speaker or set_dir.name, text))
            count, total = count + 1, total + len(wav) / sample_rate
        if rows:
            with open(out_dir / set_dir.name / "transcripts.tsv", "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f, delimiter="\t", lineterminator="\n")
                w.writerow(("file", "speaker", "transcript"))
                w.writerows(rows)
    return count, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "codec_corpus")
    p.add_argument("--speech-root", type=Path, default=ROOT.parent / "shared" / "speech")
    p.add_argument("--sentences", type=Path,
                   default=ROOT.parent / "shared" / "text" / "ljspeech_sentences.tsv")
    p.add_argument("--exclude-dir", type=Path, action="append", default=None,
                   help="audio under it is evaluation data (default: tests/data/speech); repeatable")
    p.add_argument("--exclude-list", action="append", default=None,
                   help="glob of evaluation lists whose clips are left out (default: evaluation/lists/*.lst)")
    p.add_argument("--espeak-minutes", type=float, default=21.0)
    p.add_argument("--flite-minutes", type=float, default=15.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "heldout" in args.sentences.parts:
        p.error("--sentences must not come from a held-out folder")

    exclude = excluded_names(args.exclude_dir or [ROOT / "tests" / "data" / "speech"],
                             args.exclude_list or [str(ROOT / "evaluation" / "lists" / "*.lst")])
    log.info("%d evaluation clips excluded by name", len(exclude))
    n_real, s_real = copy_real(args.speech_root, args.out / "real", exclude, args.sample_rate)
    log.info("real: %d clips, %.1f min", n_real, s_real / 60)

    sentences = read_sentences(args.sentences)
    summary = [("real", n_real, s_real)]
    for engine, minutes, folder in (("espeak-ng", args.espeak_minutes, "espeak"),
                                    ("flite", args.flite_minutes, "flite")):
        if minutes <= 0:
            continue
        jobs = plan_jobs(sentences, math.ceil(minutes * 60 / EST_SECONDS[engine]), engine, args.seed)
        n, s = build_synthetic_folder(jobs, args.out / "synth" / folder, args.sample_rate, args.workers)
        log.info("%s: %d clips, %.1f min", engine, n, s / 60)
        summary.append((folder, n, s))

    lines = ["# Codec training corpus", "", "Built by `python scripts/build_codec_corpus.py "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`.", "",
             "| part | clips | minutes |", "|---|---|---|"]
    lines += [f"| {name} | {n} | {s / 60:.1f} |" for name, n, s in summary]
    lines += ["", f"Excluded evaluation clips ({len(exclude)}): " + ", ".join(sorted(exclude)), "",
              "Licences: real speech keeps its set's licence (see each set's SOURCE.md in the speech root); "
              + "; ".join(f"{k}: {v}" for k, v in ENGINE_LICENCES.items())
              + "; sentences: LJ Speech transcripts, public domain.", ""]
    (args.out / "CORPUS.md").write_text("\n".join(lines))
    print(f"corpus in {args.out}: " + ", ".join(f"{name} {s / 60:.1f} min" for name, _, s in summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
