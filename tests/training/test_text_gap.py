"""text_gap (validation in lm/training/validation.py: the AR loss with every row given another row's
transcript minus with its own) on tiny models that are really trained: one that must read its text to know
what comes next gets a clear positive gap; one whose texts carry no information gets ~0, even though what
comes next there depends on the row's (other) audio prompt, so a gap that also moved anything but the text
would show.

The gap is computed here the way Trainer.evaluate does it: the same batches, rolled with
lm.training.validation._rolled_texts, each built with a generator reset to the same seed, token-weighted AR
loss."""

from __future__ import annotations

import pytest
import torch

from data_pipeline.records import TTSBatch
from lm.model.config import get_preset
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.model.vocab import IGNORE_INDEX
from lm.training.validation import _rolled_texts

CONFIG = get_preset("tiny", text_vocab_size=8, num_codebooks=2, codebook_size=16)
TEXTS = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7, 2])]  # two transcripts of different lengths
_g = torch.Generator().manual_seed(0)
PROMPTS = [torch.randint(0, 16, (2, 6), generator=_g) for _ in range(2)]  # two voice prompts
_SHARED = torch.randint(0, 16, (2, 3), generator=_g)
# two targets: the same first 3 frames, then 3 different ones
TARGETS = [torch.cat([_SHARED, torch.randint(0, 16, (2, 3), generator=_g)], dim=1) for _ in range(2)]
STEPS = 150


def batch(texts: list[int], prompts: list[int], targets: list[int]) -> TTSBatch:
    """Rows (TEXTS[t], PROMPTS[p], TARGETS[c]), padded as the loader pads them."""
    n = len(texts)
    lengths = torch.tensor([len(TEXTS[t]) for t in texts])
    ids = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    for i, t in enumerate(texts):
        ids[i, : len(TEXTS[t])] = TEXTS[t]
    return TTSBatch(keys=[f"u{i}" for i in range(n)], speakers=["spk"] * n, text_ids=ids,
                    text_lengths=lengths, codes=torch.stack([TARGETS[c] for c in targets]),
                    frame_lengths=torch.full((n,), 6),
                    prompt_codes=torch.stack([PROMPTS[p] for p in prompts]),
                    prompt_lengths=torch.full((n,), 6))


def train(draw_rows, seed: int = 0) -> TTSModel:
    """STEPS AdamW steps on batches `draw_rows(generator)` -> (texts, prompts, targets) of 4 rows."""
    torch.manual_seed(seed)
    model = TTSModel(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        lm = model.build_batch(batch(*draw_rows(g)), continuation_prob=0.0, generator=g)
        loss = tts_loss(model(lm), lm).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def ar_loss(model: TTSModel, batches: list[TTSBatch], seed: int = 0) -> float:
    """Token-weighted AR loss (codebook 1 + <eos>); layouts drawn from a generator seeded like the
    trainer's."""
    g = torch.Generator().manual_seed(seed)
    total = count = 0.0
    with torch.no_grad():
        for b in batches:
            lm = model.build_batch(b, continuation_prob=0.0, generator=g)
            n = float((lm.labels != IGNORE_INDEX).sum())
            total += float(tts_loss(model(lm), lm).ar_loss) * n
            count += n
    return total / count


def text_gap(model: TTSModel, batches: list[TTSBatch]) -> tuple[float, float]:
    rolled = _rolled_texts(batches)
    assert len(rolled) == len(batches)
    own = ar_loss(model, batches)
    return ar_loss(model, rolled) - own, own


def test_a_model_that_must_read_its_text_has_a_clear_text_gap() -> None:
    # one voice prompt for every row; the text alone says which target follows the shared first frames
    model = train(lambda g: ([0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1]))
    held = [batch([0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1])]  # rolled: every row gets the other text
    gap, own = text_gap(model, held)
    assert own < 0.05, own  # it learned both continuations
    # with the other transcript it predicts the other continuation where the two part (one frame in 7
    # labels: the frames after it show which continuation this is); measured 1.07 nats
    assert gap > 0.5, (gap, own)


def test_texts_that_carry_no_information_give_no_text_gap() -> None:
    # the voice prompt says which target follows; the text is drawn at random for every row
    def rows(g: torch.Generator) -> tuple[list[int], list[int], list[int]]:
        return torch.randint(0, 2, (4,), generator=g).tolist(), [0, 0, 1, 1], [0, 0, 1, 1]

    model = train(rows)
    held = [batch([0, 1, 0, 1], [0, 0, 1, 1], [0, 0, 1, 1])]  # rolled: every row gets the other text
    gap, own = text_gap(model, held)
    assert own < 0.05, own  # it learned to follow the prompt
    assert gap == pytest.approx(0.0, abs=0.02), (gap, own)
