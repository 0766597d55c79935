#!/usr/bin/env python
"""How much of a codec's first codebooks is the phone, and does that hold on voices it was not fitted on?

Reads aligned token shards (`tokenize_shards.py --align ...`): `--train` shards fit two count tables per
codebook, and every `--test` folder is scored with them:
- `phone_acc`: share of frames whose phone is the most frequent phone of their code (in the train tables);
- `code_nll`: nats per frame of -log P(code | phone) (add-one smoothed), the AR's task with its phone given
  and no history: lower means the phone pins the code down, and a low test value means it does so for
  voices outside the train set. `code_nll_train` on the train frames themselves is the floor.
A codec whose codebook 1 carries the phone rather than the voice has high `phone_acc` and a small train ->
test `code_nll` gap. Output: one table row per (test folder, codebook), and `--json` for the record.

    python scripts/diagnose_codebook_phones.py --train data/tts_tokens_v2 --test runs/diag/tokens
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_pipeline.alignment.phones import PHONES  # noqa: E402
from data_pipeline.loading.token_reader import LoaderStats, read_token_shard  # noqa: E402


def frames_of(folder: str, codebooks: int, limit: int | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All aligned frames of a token folder -> (codes [Q, N], phone ids [N], speaker names [N])."""
    shards = sorted(Path(folder).glob("*.tar"))
    if not shards:
        raise SystemExit(f"{folder}: no token shards (*.tar)")
    codes, phones, speakers, stats, seen = [], [], [], LoaderStats(), 0
    for shard in shards:
        for utt in read_token_shard(str(shard), stats, codebooks):
            if utt.frame_phones is None:
                raise SystemExit(f"{utt.url}: sample {utt.key} has no alignment; tokenize with --align")
            codes.append(utt.codes)
            phones.append(utt.frame_phones)
            speakers.append(np.full(utt.num_frames, utt.speaker, dtype=object))
            seen += 1
            if limit and seen >= limit:
                break
        if limit and seen >= limit:
            break
    return np.concatenate(codes, axis=1), np.concatenate(phones), np.concatenate(speakers)


def fit(codes: np.ndarray, phones: np.ndarray, codebook_size: int) -> np.ndarray:
    """Joint counts [num_phones, codebook_size] of one codebook's codes with the frame's phone."""
    table = np.zeros((len(PHONES), codebook_size), dtype=np.float64)
    np.add.at(table, (phones, codes), 1.0)
    return table


def score(table: np.ndarray, codes: np.ndarray, phones: np.ndarray) -> dict[str, float]:
    phone_of_code = table.argmax(axis=0)
    p_code = (table + 1.0) / (table.sum(axis=1, keepdims=True) + table.shape[1])
    return {"phone_acc": float((phone_of_code[codes] == phones).mean()),
            "code_nll": float(-np.log(p_code[phones, codes]).mean()), "frames": int(len(phones))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="aligned token shard folder the tables are fitted on")
    ap.add_argument("--test", action="append", required=True, help="aligned token shard folder(s) to score")
    ap.add_argument("--codebooks", type=int, default=2, help="score codebooks 1..N (default 2)")
    ap.add_argument("--train-limit", type=int, default=None, help="at most this many train utterances")
    ap.add_argument("--leave-one-out", action="store_true",
                    help="also score each --train speaker with tables fitted on the other speakers")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    train_codes, train_phones, train_speakers = frames_of(args.train, args.codebooks, args.train_limit)
    size = int(train_codes.max()) + 1
    rows = []
    tests = [(t, *frames_of(t, args.codebooks, None)[:2]) for t in args.test]
    size = max([size] + [int(c.max()) + 1 for _, c, _ in tests])
    for q in range(args.codebooks):
        table = fit(train_codes[q], train_phones, size)
        floor = score(table, train_codes[q], train_phones)
        for name, codes, phones in tests:
            rows.append({"test": name, "codebook": q + 1, **score(table, codes[q], phones),
                         "phone_acc_train": floor["phone_acc"], "code_nll_train": floor["code_nll"]})
        if args.leave_one_out:  # an unseen voice of the train corpus's own kind
            for speaker in sorted(set(train_speakers)):
                out = train_speakers == speaker
                table = fit(train_codes[q][~out], train_phones[~out], size)
                rows.append({"test": f"left out: {speaker}", "codebook": q + 1,
                             **score(table, train_codes[q][out], train_phones[out]),
                             "phone_acc_train": floor["phone_acc"], "code_nll_train": floor["code_nll"]})
    print(f"train: {args.train} ({len(train_phones):,} frames); codebook size {size}")
    print(f"{'test':<32} {'cb':>2} {'frames':>8} {'phone_acc':>9} {'(train)':>8} {'code_nll':>9} "
          f"{'(train)':>8}")
    for r in rows:
        print(f"{r['test'][-32:]:<32} {r['codebook']:>2} {r['frames']:>8,} {r['phone_acc']:>9.3f} "
              f"{r['phone_acc_train']:>8.3f} {r['code_nll']:>9.3f} {r['code_nll_train']:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
