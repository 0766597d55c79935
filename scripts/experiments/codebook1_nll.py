#!/usr/bin/env python
"""Teacher-forced codebook-1 loss of a phone-aligned export on token shards (speaker-prompt layout, each clip
prompted by another of its speaker as diagnose_stages.py pairs them), and what a logit bonus for the prompt's
own codes does to it (README "Round 10: house voices").

    python scripts/experiments/codebook1_nll.py --checkpoint models/default --shards runs/diag/tokens_v3

runs/diag/tokens_v3: the 44 real clips of tests/data/speech tokenized by codec_rvq16k_v3 with the aligner
(README "Which voices it fails on"); data/tts_tokens_v3c/tokens-000021.tar: the corpus's validation shard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: diagnose_stages
from diagnose_stages import clips  # noqa: E402

from lm.inference.synthesizer import Synthesizer  # noqa: E402
from lm.model.batch import build_lm_batch  # noqa: E402
from lm.model.vocab import IGNORE_INDEX  # noqa: E402

BONUSES = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--shards", required=True, nargs="+")
    p.add_argument("--limit", type=int, default=44)
    args = p.parse_args()
    synth = Synthesizer.from_pretrained(args.checkpoint)
    model, k = synth.model, synth.model.config.codebook_size
    totals = {b: [0.0, 0] for b in BONUSES}
    frames = covered = 0
    set_sizes = []
    for batch, request, _ in clips(synth, args.shards, args.limit, 12.0):
        f = int(batch.frame_lengths[0])
        lm = build_lm_batch(batch, model.vocab, model.config.num_codebooks,
                            model.config.max_position_embeddings, continuation_prob=0.0, phone_aligned=True)
        with torch.inference_mode():
            logits = model(lm).ar_logits[0]
        rows = (lm.labels[0] != IGNORE_INDEX).nonzero().flatten()[:f]
        logits, target = logits[rows, :k].float(), batch.codes[0, 0, :f].long()
        in_prompt = torch.zeros(k, dtype=torch.bool)
        in_prompt[request.prompt_codes[0].long()] = True
        set_sizes.append(int(in_prompt.sum()))
        covered += int(in_prompt[target].sum())
        frames += f
        for bonus in BONUSES:
            logp = torch.log_softmax(logits + bonus * in_prompt.float(), -1)
            totals[bonus][0] += float(-logp.gather(1, target[:, None]).sum())
            totals[bonus][1] += int((logp.argmax(-1) == target).sum())
    uniform = float(torch.log(torch.tensor(float(k))))
    print(f"{len(set_sizes)} clips, {frames} frames; uniform guess {uniform:.2f} nats")
    print(f"codes in a prompt: {sum(set_sizes) / len(set_sizes):.0f} of {k}; target frames whose code is "
          f"among them: {covered / frames:.3f}")
    for bonus, (nll, hits) in totals.items():
        print(f"bonus {bonus:3.1f} for the prompt's codes: {nll / frames:.3f} nats/frame, "
              f"top-1 {hits / frames:.3f}")


if __name__ == "__main__":
    main()
