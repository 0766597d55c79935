"""Shared helpers for the lm tests: the tiny preset and small random TTSBatches."""

from __future__ import annotations

import pytest
import torch

from data_pipeline.records import TTSBatch
from lm.model.config import ModelConfig, get_preset
from lm.model.model import TTSModel
from lm.model.sequence import phone_frame_inputs


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are overhead-bound (a second thread only adds sync, and on a busy 2-core box OpenMP
    spinning makes it ~10x slower); one thread also makes a row's float reductions identical alone and in a
    batch. Modules use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny_config() -> ModelConfig:
    return get_preset("tiny")


@pytest.fixture()
def tiny_model(tiny_config: ModelConfig) -> TTSModel:
    torch.manual_seed(0)
    return TTSModel(tiny_config)


def random_batch(
    config: ModelConfig,
    text_lengths: list[int],
    frame_lengths: list[int],
    prompt_lengths: list[int],
    num_codebooks: int | None = None,
    seed: int = 0,
) -> TTSBatch:
    """A padded batch like the loader's collate makes: zeros past each length."""
    g = torch.Generator().manual_seed(seed)
    bsz, q = len(text_lengths), num_codebooks or config.num_codebooks
    tl, fl, pl = (torch.tensor(x) for x in (text_lengths, frame_lengths, prompt_lengths))
    text = torch.randint(0, config.text_vocab_size, (bsz, int(tl.max())), generator=g)
    codes = torch.randint(0, config.codebook_size, (bsz, q, int(fl.max())), generator=g)
    prompt = torch.randint(0, config.codebook_size, (bsz, q, int(pl.max())), generator=g)
    text = text * (torch.arange(text.shape[1])[None] < tl[:, None])
    codes = codes * (torch.arange(codes.shape[2])[None, None] < fl[:, None, None])
    prompt = prompt * (torch.arange(prompt.shape[2])[None, None] < pl[:, None, None])
    return TTSBatch(
        keys=[f"utt{b}" for b in range(bsz)],
        speakers=["spk"] * bsz,
        text_ids=text,
        text_lengths=tl,
        codes=codes,
        frame_lengths=fl,
        prompt_codes=prompt,
        prompt_lengths=pl,
    )


@pytest.fixture()
def make_batch():
    """`random_batch` as a fixture (test modules are not importable as a package)."""
    return random_batch


def phone_aligned_batch(config: ModelConfig, frames: list[int], seed: int) -> TTSBatch:
    """Rows whose codebook-1 code at each frame is a function of the phone and its in-phone index: only a
    model that reads the phones can predict them."""
    g = torch.Generator().manual_seed(seed)
    rows = len(frames)
    width = max(frames)
    codes = torch.zeros(rows, config.num_codebooks, width, dtype=torch.long)
    frame_phones = torch.zeros(rows, width, dtype=torch.long)
    ids, durs = [], []
    for b, n in enumerate(frames):
        p, d = [], []  # each phone lasts 2-5 frames, set by its id: the advance is learnable too
        while sum(d) < n:
            p.append(int(torch.randint(1, config.num_phones, (1,), generator=g)))
            d.append(2 + p[-1] % 4)
        d[-1] -= sum(d) - n
        if d[-1] <= 0:
            p, d = p[:-1], d[:-1]
            d[-1] += n - sum(d)
        p = torch.tensor(p)
        per_frame, _ = phone_frame_inputs(p, torch.tensor(d))
        codes[b, :, :n] = ((per_frame[:, 0] * 5 + per_frame[:, 1] * 3) % config.codebook_size)[None]
        frame_phones[b, :n] = per_frame[:, 0]
        ids.append(p)
        durs.append(torch.tensor(d))
    p_width = max(len(p) for p in ids)
    phone_ids = torch.zeros(rows, p_width, dtype=torch.long)
    durations = torch.zeros(rows, p_width, dtype=torch.long)
    for b, (p, d) in enumerate(zip(ids, durs, strict=True)):
        phone_ids[b, : len(p)], durations[b, : len(d)] = p, d
    text = torch.randint(0, config.text_vocab_size, (rows, 4), generator=g)
    return TTSBatch(
        keys=[f"u{b}" for b in range(rows)], speakers=["s"] * rows, text_ids=text,
        text_lengths=torch.full((rows,), 4), codes=codes, frame_lengths=torch.tensor(frames),
        prompt_codes=codes[:, :, :3].clone(), prompt_lengths=torch.full((rows,), 3),
        phone_ids=phone_ids, phone_durations=durations, phone_lengths=torch.tensor([len(p) for p in ids]),
        frame_phones=frame_phones, prompt_phones=frame_phones[:, :3].clone(),
    )


@pytest.fixture()
def aligned_batch():
    """`phone_aligned_batch(config, frames, seed)`: rows whose codes follow their phones."""
    return phone_aligned_batch


@pytest.fixture()
def phone_config() -> ModelConfig:
    return get_preset("tiny").replace(alignment="phoneme", num_codebooks=2, codebook_size=64)
