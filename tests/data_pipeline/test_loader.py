"""The WebDataset loader over real token shards: coverage, splits, exact resume, corrupt data."""

from __future__ import annotations

import io
import itertools
import logging
import tarfile
from collections import Counter

import pytest
import torch

from data_pipeline.loading.batching import BatchingConfig
from data_pipeline.loading.loader import LoaderConfig, TokenLoader, build_loader
from data_pipeline.tokens.token_shards import write_shard_atomically

SMALL = dict(max_frames=1500, max_batch_size=8, min_seconds=0.5, max_seconds=9.0, bucket_ratio=1.3)


def all_keys(loader: TokenLoader) -> Counter:
    return Counter(k for batch in loader for k in batch.keys)


def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x.keys == y.keys and x.prompt_keys == y.prompt_keys and torch.equal(x.codes, y.codes)
        and torch.equal(x.prompt_codes, y.prompt_codes) and torch.equal(x.text_ids, y.text_ids)
        for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_pass_yields_every_utterance_exactly_once(token_shards, text_encoder, num_workers):
    paths = token_shards(num_shards=4, per_shard=10)
    loader = build_loader(str(paths[0].parent), text_encoder, infinite=False, num_workers=num_workers,
                          shuffle_buffer=16, **SMALL)
    keys = all_keys(loader)
    assert len(keys) == 40 and set(keys.values()) == {1}
    assert loader.stats.samples == 40 and loader.stats.corrupt == 0
    assert all_keys(loader) == keys  # a second pass is again complete


def test_ranks_and_workers_split_disjoint_and_complete(token_shards, text_encoder):
    paths = token_shards(num_shards=8, per_shard=5)
    spec = str(paths[0].parent / "tokens-{000000..000007}.tar")  # brace pattern
    per_rank = [all_keys(build_loader(spec, text_encoder, infinite=False, rank=r, world_size=2, num_workers=2,
                                      **SMALL)) for r in range(2)]
    assert set(per_rank[0]) & set(per_rank[1]) == set()
    assert len(per_rank[0]) + len(per_rank[1]) == 40
    assert all(set(c.values()) == {1} for c in per_rank)


def test_rank_comes_from_launcher_environment(token_shards, text_encoder, monkeypatch):
    paths = token_shards(num_shards=4, per_shard=3)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    loader = build_loader([str(p) for p in paths], text_encoder, infinite=False, **SMALL)
    assert (loader.rank, loader.world_size) == (1, 2)
    assert len(all_keys(loader)) == 6


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restored_loader_yields_exactly_the_next_batches(token_shards, text_encoder, num_workers):
    paths = token_shards(num_shards=4, per_shard=8)
    cfg = LoaderConfig(shards=str(paths[0].parent), batching=BatchingConfig(**SMALL), seed=3,
                       num_workers=num_workers, shuffle_buffer=8)
    loader = TokenLoader(cfg, text_encoder)
    stream = iter(loader)
    list(itertools.islice(stream, 9))
    state = loader.state_dict()
    expected = list(itertools.islice(stream, 25))  # runs into the next epochs
    del stream
    restored = TokenLoader(cfg, text_encoder)
    restored.load_state_dict(state)
    assert same_batches(list(itertools.islice(iter(restored), 25)), expected)
    assert restored.stats == loader.stats  # counters replay to the same values


def test_validation_pass_resumed_mid_way_still_covers_everything_once(token_shards, text_encoder):
    paths = token_shards(num_shards=4, per_shard=8)
    cfg = LoaderConfig(shards=str(paths[0].parent), batching=BatchingConfig(**SMALL), infinite=False,
                       num_workers=2)
    loader = TokenLoader(cfg, text_encoder)
    seen = Counter(k for batch in itertools.islice(iter(loader), 3) for k in batch.keys)
    restored = TokenLoader(cfg, text_encoder)
    restored.load_state_dict(loader.state_dict())
    seen.update(all_keys(restored))
    assert len(seen) == 32 and set(seen.values()) == {1}


def test_epochs_reshuffle_and_cover_everything(token_shards, text_encoder):
    paths = token_shards(num_shards=4, per_shard=6)
    loader = build_loader(str(paths[0].parent), text_encoder, shuffle_buffer=8, **SMALL)
    orders, keys = [], []
    for batch in loader:
        keys += batch.keys
        if len(keys) >= 24 * 3:
            break
    for e in range(3):
        epoch = keys[24 * e: 24 * (e + 1)]
        assert len(set(epoch)) == 24  # each epoch is a permutation of the data
        orders.append(epoch)
    assert orders[0] != orders[1] != orders[2]


def test_state_from_another_setup_is_refused(token_shards, text_encoder):
    paths = token_shards(num_shards=2, per_shard=4)
    state = build_loader(str(paths[0].parent), text_encoder, seed=1, **SMALL).state_dict()
    other = build_loader(str(paths[0].parent), text_encoder, seed=2, **SMALL)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_corrupt_samples_are_logged_skipped_and_counted(tmp_path, token_shards, text_encoder, sample_factory,
                                                        caplog):
    paths = token_shards(num_shards=2, per_shard=5)
    bad_npy = sample_factory("bad-npy", "spk9", 100, 1)
    bad_npy["codes.npy"] = b"not a numpy file"
    bad_shape = sample_factory("bad-shape", "spk9", 100, 2)
    bad_shape["json"] = bad_shape["json"].replace(b'"num_frames": 100', b'"num_frames": 99')
    no_json = sample_factory("no-json", "spk9", 100, 3)
    del no_json["json"]
    good = sample_factory("good", "spk9", 100, 4)
    mixed = paths[0].parent / "tokens-000002.tar"
    write_shard_atomically(mixed, [bad_npy, good, bad_shape, no_json])
    # a truncated shard: the first sample survives, the cut one is reported
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as tar:
        for s in (sample_factory("cut-ok", "spk8", 90, 5), sample_factory("cut-lost", "spk8", 500, 6)):
            for ext in ("codes.npy", "json"):
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(s[ext])
                tar.addfile(info, io.BytesIO(s[ext]))
    truncated = paths[0].parent / "tokens-000003.tar"
    truncated.write_bytes(whole.getvalue()[:2500])
    caplog.set_level(logging.WARNING, logger="data_pipeline.loading.token_reader")
    loader = build_loader(str(paths[0].parent), text_encoder, infinite=False, **SMALL)
    keys = all_keys(loader)
    assert set(keys) == {f"s{s:03d}-u{n:05d}" for s, r in ((0, range(5)), (1, range(5, 10))) for n in r} | {
        "good", "cut-ok"}
    assert loader.stats.corrupt >= 4
    log = caplog.text
    for key in ("bad-npy", "bad-shape", "no-json"):
        assert key in log
    assert str(mixed) in log and str(truncated) in log


def test_length_filter_is_counted(token_shards, text_encoder):
    paths = token_shards(num_shards=1, per_shard=6, lengths=[20, 100, 200, 800, 300, 150])
    loader = build_loader(str(paths[0]), text_encoder, infinite=False, max_frames=1000, min_seconds=0.5,
                          max_seconds=10.0)
    assert sum(all_keys(loader).values()) == 4
    assert (loader.stats.too_short, loader.stats.too_long) == (1, 1)  # 20 frames; 800 frames > 10 s


def test_pipe_urls_are_read(token_shards, text_encoder):
    paths = token_shards(num_shards=2, per_shard=4)
    loader = build_loader([f"pipe:cat {p}" for p in paths], text_encoder, infinite=False, **SMALL)
    assert len(all_keys(loader)) == 8


def test_fewer_shards_than_workers_split_by_sample(token_shards, text_encoder, caplog):
    paths = token_shards(num_shards=1, per_shard=5)
    caplog.set_level(logging.INFO, logger="data_pipeline.loading.loader")
    loader = build_loader(str(paths[0].parent), text_encoder, infinite=False, num_workers=2, **SMALL)
    assert loader.split == "sample" and "splitting by sample" in caplog.text
    keys = all_keys(loader)
    assert len(keys) == 5 and set(keys.values()) == {1}
