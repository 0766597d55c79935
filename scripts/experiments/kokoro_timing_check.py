#!/usr/bin/env python
"""Kokoro's own durations (data_pipeline/corpus/kokoro_timing.py) against the forced aligner on the same
clips: word and phone boundary errors (data_pipeline/alignment/scoring.py), the way scripts/bench_align.py
scores the aligner against espeak-ng / flite timings. Sentences: the aligner's held-out text. Clips whose
phoneme words do not map one to one onto the transcript's (espeak-ng joined two) are skipped.

    python scripts/experiments/kokoro_timing_check.py --clips 24
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from data_pipeline.alignment.aligner import DEFAULT_ALIGNER, Aligner, AlignmentError  # noqa: E402
from data_pipeline.alignment.schema import speakable_text  # noqa: E402
from data_pipeline.alignment.scoring import BoundaryErrors, boundary_errors, summary  # noqa: E402
from data_pipeline.alignment.synthetic_set import split_sentences  # noqa: E402
from data_pipeline.corpus.kokoro_voice import KokoroVoice  # noqa: E402
from data_pipeline.corpus.synthetic_speech import SynthJob, synthesize  # noqa: E402
from data_pipeline.text.normalize import normalize_text  # noqa: E402
from scripts.train_aligner import corpus_sentences  # noqa: E402

VOICES = (KokoroVoice("alpha", {"jf_alpha": 1.0}), KokoroVoice("kumo", {"jm_kumo": 1.0}, speed=1.1),
          KokoroVoice("gon_teb", {"jf_gongitsune": 0.5, "jf_tebukuro": 0.5}, speed=0.95))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    _, heldout = split_sentences(corpus_sentences(ROOT.parent / "shared" / "text" / "ljspeech_sentences.tsv"))
    aligner = Aligner.load(DEFAULT_ALIGNER)
    total, failed, skipped, signed = BoundaryErrors(), 0, 0, []
    for k in range(args.clips):
        voice, text = VOICES[k % len(VOICES)], heldout[k]
        job = SynthJob(key=f"k{k}", text=text, engine="kokoro", voice=voice.name, rate=voice.speed, pitch=0.0,
                       kokoro=voice)
        wav, truth = synthesize(job, 16000)
        if "word_map" in truth.extra:  # espeak-ng joined or split a word: word indices are approximate
            skipped += 1
            continue
        try:
            hyp = aligner.align(wav.numpy(), 16000, speakable_text(normalize_text(text)))
            total.extend(boundary_errors(truth, hyp))
            signed += [h.start - t.start for t, h in zip(truth.words, hyp.words, strict=True)]
        except (AlignmentError, ValueError) as e:
            failed += 1
            print(f"clip {k} ({voice.name}): {e}")
    result = {"clips": args.clips, "failed": failed, "skipped_word_map": skipped,
              "word_start_aligner_minus_kokoro_median_ms": round(float(np.median(signed)) * 1000, 1),
              "words": summary(total.words),
              "phones": summary(total.phones),
              "phone_words_compared": f"{total.phone_words_compared}/{total.phone_words_total}"}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
