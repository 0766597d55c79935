"""Prompt pairing, length buckets and collate on in-memory utterances."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from data_pipeline.loading.batching import (
    BatchingConfig,
    BucketBatcher,
    Paired,
    PromptPairer,
    Utterance,
    collate,
    length_rejection,
    padding_fraction,
    plan_batch,
)


def utt(key: str, speaker: str, frames: int, q: int = 4, seed: int = 0) -> Utterance:
    codes = np.random.default_rng(seed).integers(0, 1024, (q, frames)).astype(np.int16)
    return Utterance(key=key, speaker=speaker, text=f"text of {key}", codes=codes, frame_rate=75.0)


def test_prompt_is_another_utterance_of_the_speaker_whenever_one_exists():
    cfg = BatchingConfig(pairing_window=3, pairing_pool=4)
    stream = [utt(f"a{i}", "alice", 200) for i in range(5)]  # a speaker's first one needs the look-ahead
    stream += [utt("solo", "bob", 200)]  # only utterance of its speaker
    stream += [utt(f"c{i}", "carol", 150) for i in range(2)]
    stream += [utt("anon", "", 300)]  # unknown speaker
    pairs = {p.target.key: p for p in PromptPairer(cfg, random.Random(0))(stream)}
    assert set(pairs) == {u.key for u in stream}  # nothing lost, nothing duplicated
    for key, p in pairs.items():
        if key in ("solo", "anon"):
            assert p.is_crop and p.prompt_source is p.target
        else:
            assert not p.is_crop
            assert p.prompt_source.key != key and p.prompt_source.speaker == p.target.speaker


def test_prompt_candidates_shorter_than_the_minimum_prompt_are_not_used():
    cfg = BatchingConfig(prompt_min_seconds=1.0)
    stream = [utt("long", "dan", 300), utt("short", "dan", 40)]  # 40 frames < 75 = 1 s
    pairs = {p.target.key: p for p in PromptPairer(cfg, random.Random(0))(stream)}
    assert pairs["long"].is_crop  # its only partner is too short to cut a prompt from
    assert not pairs["short"].is_crop and pairs["short"].prompt_source.key == "long"


def test_length_filter_reasons():
    cfg = BatchingConfig(min_seconds=1.0, max_seconds=10.0, max_frames=700)
    assert length_rejection(utt("a", "s", 74), cfg) == "too_short"
    assert length_rejection(utt("b", "s", 75), cfg) is None
    assert length_rejection(utt("c", "s", 701), cfg) == "too_long"  # longer than the whole batch budget
    assert length_rejection(utt("d", "s", 751), BatchingConfig(max_seconds=10.0)) == "too_long"


def _lognormal_stream(n: int, seed: int = 0) -> list[Paired]:
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(mean=1.6, sigma=0.5, size=n), 0.6, 19.0)  # LibriTTS-like spread
    items = []
    for i, s in enumerate(seconds):
        u = utt(f"u{i}", f"spk{i % 50}", int(s * 75), q=1, seed=i)
        items.append(Paired(u, u, is_crop=True))
    return items


def _padding(batches: list[list[Paired]]) -> float:
    real = sum(p.target.num_frames for b in batches for p in b)
    padded = sum(len(b) * max(p.target.num_frames for p in b) for b in batches)
    return 1 - real / padded


def test_buckets_respect_the_budget_keep_every_item_and_bound_padding():
    items = _lognormal_stream(3000)
    cfg = BatchingConfig(max_frames=8000, max_batch_size=64, bucket_ratio=1.05)
    batches = list(BucketBatcher(cfg)(items))
    counts = Counter(p.target.key for b in batches for p in b)
    assert len(counts) == len(items) and set(counts.values()) == {1}
    for b in batches:
        assert len(b) <= 64
        assert len(b) * max(p.target.num_frames for p in b) <= 8000
    bucketed = _padding(batches)
    unbucketed = _padding(list(BucketBatcher(BatchingConfig(max_frames=8000, max_batch_size=64,
                                                            bucket_ratio=None))(items)))
    assert bucketed <= 0.05, bucketed
    assert unbucketed > 3 * bucketed  # the buckets are what keeps padding low
    assert len(batches) < 1.3 * sum(p.target.num_frames for p in items) / 8000 + 60  # batches stay full


def test_plan_and_collate_build_the_documented_tensors(text_encoder):
    cfg = BatchingConfig(prompt_min_seconds=1.0, prompt_max_seconds=3.0)
    a, b, c = utt("a", "x", 400, seed=1), utt("b", "x", 120, seed=2), utt("c", "y", 160, seed=3)
    items = [Paired(a, b, is_crop=False), Paired(b, a, is_crop=False), Paired(c, c, is_crop=True)]
    rng = random.Random(0)
    for _ in range(20):
        plan = plan_batch(items, cfg, rng)
        # capped by the shortest source (b: 120 frames) and by half of the cropped target (c: 80 frames)
        assert 75 <= plan.prompt_frames <= 80
        batch = collate(plan, text_encoder)
        assert batch.codes.shape == (3, 4, 400) and batch.codes.dtype == torch.long
        assert batch.frame_lengths.tolist() == [400, 120, 160]
        assert batch.prompt_codes.shape == (3, 4, plan.prompt_frames)
        assert batch.prompt_lengths.tolist() == [plan.prompt_frames] * 3
        assert batch.prompt_is_crop.tolist() == [False, False, True]
        assert batch.prompt_keys == ["b", "a", "c"]
        for i, item in enumerate(items):
            f = item.target.num_frames
            assert torch.equal(batch.codes[i, :, :f], torch.from_numpy(item.target.codes.astype(np.int64)))
            assert not batch.codes[i, :, f:].any()
            start = plan.prompt_starts[i]
            window = item.prompt_source.codes[:, start:start + plan.prompt_frames].astype(np.int64)
            assert torch.equal(batch.prompt_codes[i], torch.from_numpy(window))
            ids = text_encoder(item.target.text)
            assert batch.text_ids[i, :len(ids)].tolist() == ids and batch.text_lengths[i] == len(ids)
    assert padding_fraction(batch.frame_lengths) == pytest.approx(1 - 680 / 1200)


def test_collate_refuses_mixed_codebook_counts(text_encoder):
    a, b = utt("a", "x", 100, q=4), utt("b", "x", 100, q=8)
    plan = plan_batch([Paired(a, a, True), Paired(b, b, True)], BatchingConfig(), random.Random(0))
    with pytest.raises(ValueError, match="different codebook counts"):
        collate(plan, text_encoder)
