"""Shared helpers for the lm tests: the tiny preset and small random TTSBatches."""

from __future__ import annotations

import pytest
import torch

from data_pipeline.records import TTSBatch
from lm.config import ModelConfig, get_preset
from lm.model import TTSModel


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
