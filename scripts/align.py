#!/usr/bin/env python
"""Force-align speech to its transcript: word and phone spans in seconds (and the frame rate they tile).

    python scripts/align.py --audio clip.wav --text "The quick brown fox." --out clip.align.json
    python scripts/align.py --list clips.tsv --out-dir aligned/       # TSV: wav path <TAB> transcript

Output: {"words": [{"word", "start", "end"}], "phones": [{"phone", "start", "end", "word_index"}],
"frame_rate", "aligner", "score", "duration"}: one entry per word of the normalised transcript, in order;
phones tile the clip (pauses are "pau" with word_index -1). A clip the aligner cannot fit (wrong
transcript, silence, far too short for its text) is not aligned: its error names the file, the reason and
the score. With --list, failures go to OUT_DIR/rejects.jsonl and the exit status is 1 if any clip failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codec.audio import AudioReadError, load_audio  # noqa: E402
from data_pipeline.alignment.aligner import DEFAULT_ALIGNER, Aligner, AlignmentError  # noqa: E402


def alignment_json(alignment) -> dict:  # noqa: ANN001
    return {
        "words": [{"word": w.word, "start": round(w.start, 4), "end": round(w.end, 4)}
                  for w in alignment.words],
        "phones": [{"phone": p.phone, "start": round(p.start, 4), "end": round(p.end, 4),
                    "word_index": p.word_index} for p in alignment.phones],
        "frame_rate": alignment.frame_rate, "aligner": alignment.aligner, "score": alignment.score,
        "duration": round(alignment.duration, 4), "fit_gap": alignment.extra.get("fit_gap"),
    }


def align_file(aligner: Aligner, audio: Path, text: str) -> dict:
    wav, sr = load_audio(audio)
    return alignment_json(aligner.align(wav, sr, text))


def read_list(path: Path) -> list[tuple[Path, str]]:
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise SystemExit(f"{path}:{lineno}: expected 'wav<TAB>text', got {row!r}")
            audio = Path(row[0]) if Path(row[0]).is_absolute() else path.parent / row[0]
            rows.append((audio, row[1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", type=Path)
    p.add_argument("--text")
    p.add_argument("--out", type=Path, help="output JSON (default: stdout)")
    p.add_argument("--list", type=Path, help="TSV of wav path <TAB> transcript (paths relative to the TSV)")
    p.add_argument("--out-dir", type=Path, help="with --list: one STEM.align.json per clip + rejects.jsonl")
    p.add_argument("--aligner", type=Path, default=DEFAULT_ALIGNER)
    args = p.parse_args(argv)
    if bool(args.list) == bool(args.audio):
        p.error("give either --audio with --text, or --list with --out-dir")
    if args.audio and args.text is None:
        p.error("--audio needs --text")
    if args.list and not args.out_dir:
        p.error("--list needs --out-dir")
    aligner = Aligner.load(args.aligner)

    if args.audio:
        try:
            result = align_file(aligner, args.audio, args.text)
        except (AlignmentError, AudioReadError) as e:
            print(f"align: {args.audio}: {e}", file=sys.stderr)
            return 2
        text = json.dumps(result, indent=1, ensure_ascii=False) + "\n"
        if args.out:
            args.out.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0

    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    with open(args.out_dir / "rejects.jsonl", "w", encoding="utf-8") as rejects:
        for audio, text in read_list(args.list):
            try:
                result = align_file(aligner, audio, text)
            except (AlignmentError, AudioReadError) as e:
                failed += 1
                record = {"audio": str(audio), "reason": getattr(e, "reason", "unreadable_audio"),
                          "detail": str(e), "score": getattr(e, "score", None)}
                rejects.write(json.dumps(record, ensure_ascii=False) + "\n")
                print(f"align: {audio}: {e}", file=sys.stderr)
                continue
            (args.out_dir / f"{audio.stem}.align.json").write_text(
                json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"aligned {len(read_list(args.list)) - failed} clips, {failed} failed "
          f"(see {args.out_dir / 'rejects.jsonl'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
