"""The loader on many ranks: fewer shards than ranks x workers (split by sample), and a position handed
over to another number of ranks or workers (resume at another world size) repeats and skips nothing."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from test_loader import SMALL, same_batches

from data_pipeline.loading.batching import BatchingConfig
from data_pipeline.loading.loader import LoaderConfig, TokenLoader


def loader_for(shards: Path, text_encoder, rank: int, world_size: int, num_workers: int = 0,
               infinite: bool = True) -> TokenLoader:
    cfg = LoaderConfig(shards=str(shards), batching=BatchingConfig(**SMALL), seed=5, shuffle_buffer=4,
                       infinite=infinite, rank=rank, world_size=world_size, num_workers=num_workers)
    return TokenLoader(cfg, text_encoder)


def take(loader: TokenLoader, n: int) -> list[str]:
    """The keys of the loader's next `n` batches (then the loader's position is just after them)."""
    return [k for batch in itertools.islice(iter(loader), n) for k in batch.keys]


def epoch_keys(loader: TokenLoader, epochs: int) -> list[Counter]:
    """The keys of each of the first `epochs` epochs (every worker's), read off the position of the worker
    that made each batch."""
    seen: list[Counter] = [Counter() for _ in range(epochs)]
    past: set[int] = set()
    for batch in loader:
        state = loader.state_dict()
        worker = (state["next_worker"] - 1) % loader.num_workers
        epoch = state["positions"][worker]["epoch"]
        if epoch < epochs:
            seen[epoch].update(batch.keys)
        else:
            past.add(worker)
            if len(past) == loader.num_workers:
                return seen
    raise AssertionError("the loader ended")


def handover_keys(loader: TokenLoader) -> list[str]:
    """The keys of the batches a resharded loader hands out while it finishes the old streams' epochs
    (until every one of its workers has started its own first epoch)."""
    keys, started = [], set()
    for batch in loader:
        state = loader.state_dict()
        worker = (state["next_worker"] - 1) % loader.num_workers
        if state["positions"][worker]["handover"]:
            assert worker not in started, "a worker went back to handing over"
            keys += batch.keys
        else:
            started.add(worker)
            if len(started) == loader.num_workers:
                return keys
    raise AssertionError("the loader ended")


def states_of(loaders: list[TokenLoader]) -> list[dict]:
    return [loader.state_dict() for loader in loaders]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_shard_on_two_ranks_each_sample_once_per_epoch(token_shards, text_encoder, caplog,
                                                           num_workers):
    """7 clips in 1 shard on 2 ranks (the case that used to stop with 'cannot feed'): each epoch, the two
    ranks together see every clip exactly once."""
    paths = token_shards(num_shards=1, per_shard=7, per_speaker=2)
    caplog.set_level("INFO", logger="data_pipeline.loading.loader")
    loaders = [loader_for(paths[0], text_encoder, rank, 2, num_workers) for rank in range(2)]
    assert all(loader.split == "sample" for loader in loaders)
    assert "1 token shard(s) for 2 rank(s)" in caplog.text and "splitting by sample" in caplog.text
    per_epoch = [Counter(), Counter(), Counter()]
    for loader in loaders:
        for total, mine in zip(per_epoch, epoch_keys(loader, 3), strict=True):
            total.update(mine)
    assert len(per_epoch[0]) == 7 and set(per_epoch[0].values()) == {1}
    assert per_epoch[1] == per_epoch[2] == per_epoch[0]


def test_sample_split_resumes_exactly(token_shards, text_encoder):
    paths = token_shards(num_shards=1, per_shard=9, per_speaker=3)
    loader = loader_for(paths[0], text_encoder, 1, 2)
    stream = iter(loader)
    list(itertools.islice(stream, 3))
    state = loader.state_dict()
    expected = list(itertools.islice(stream, 8))  # into later epochs
    del stream
    restored = loader_for(paths[0], text_encoder, 1, 2)
    restored.load_state_dict(state)
    assert same_batches(list(itertools.islice(iter(restored), 8)), expected)


def _old_run(shards: Path, text_encoder, world_size: int, batches: int, num_workers: int = 0
             ) -> tuple[list[TokenLoader], Counter]:
    """`world_size` ranks, each `batches` batches into epoch 0 (checked), and the keys they consumed."""
    loaders = [loader_for(shards, text_encoder, rank, world_size, num_workers) for rank in range(world_size)]
    seen = Counter(k for loader in loaders for k in take(loader, batches))
    assert all(p["epoch"] == 0 for state in states_of(loaders) for p in state["positions"])
    return loaders, seen


@pytest.mark.parametrize(("old", "new"), [((2, 0), (1, 0)), ((1, 0), (2, 0)), ((2, 0), (3, 2)),
                                          ((2, 2), (1, 0))])
def test_handover_to_another_world_size_repeats_and_skips_nothing(token_shards, text_encoder, old, new):
    """Old ranks stop mid-epoch; the new ranks finish those epochs: together every sample exactly once."""
    paths = token_shards(num_shards=4, per_shard=6)
    (old_world, old_workers), (new_world, new_workers) = old, new
    loaders, seen = _old_run(paths[0].parent, text_encoder, old_world, 2, old_workers)
    states = states_of(loaders)
    for rank in range(new_world):
        loader = loader_for(paths[0].parent, text_encoder, rank, new_world, new_workers)
        note = loader.load_resharded_state(states)
        assert f"{old_world} rank(s) x {max(1, old_workers)} worker(s) -> {new_world} x" in note
        seen.update(handover_keys(loader))
    assert len(seen) == 24 and set(seen.values()) == {1}, seen


def test_two_ranks_to_one_to_two_mid_handover(token_shards, text_encoder):
    """A second world-size change while the first hand-over is still running hands over what is left."""
    paths = token_shards(num_shards=4, per_shard=6)
    loaders, seen = _old_run(paths[0].parent, text_encoder, 2, 1)
    one = loader_for(paths[0].parent, text_encoder, 0, 1)
    one.load_resharded_state(states_of(loaders))
    seen.update(take(one, 2))
    assert one.state_dict()["positions"][0]["handover"], "the test must stop inside the hand-over"
    two = [loader_for(paths[0].parent, text_encoder, rank, 2) for rank in range(2)]
    for loader in two:
        loader.load_resharded_state([one.state_dict()])
        seen.update(handover_keys(loader))
    assert len(seen) == 24 and set(seen.values()) == {1}, seen


def test_resume_inside_a_handover_at_the_same_world_size_is_exact(token_shards, text_encoder):
    paths = token_shards(num_shards=4, per_shard=6)
    loaders, _ = _old_run(paths[0].parent, text_encoder, 2, 2)
    one = loader_for(paths[0].parent, text_encoder, 0, 1)
    one.load_resharded_state(states_of(loaders))
    stream = iter(one)
    list(itertools.islice(stream, 1))
    state = one.state_dict()
    expected = list(itertools.islice(stream, 12))  # the rest of the hand-over and into new epochs
    del stream
    restored = loader_for(paths[0].parent, text_encoder, 0, 1)
    restored.load_state_dict(state)
    assert same_batches(list(itertools.islice(iter(restored), 12)), expected)


def test_handover_refuses_other_data_or_settings(token_shards, text_encoder):
    paths = token_shards(num_shards=2, per_shard=4)
    loaders, _ = _old_run(paths[0].parent, text_encoder, 2, 1)
    cfg = LoaderConfig(shards=str(paths[0].parent), batching=BatchingConfig(**SMALL), seed=6,
                       shuffle_buffer=4, rank=0, world_size=1)
    with pytest.raises(ValueError, match="seed was 5, now 6"):
        TokenLoader(cfg, text_encoder).load_resharded_state(states_of(loaders))
    with pytest.raises(ValueError, match="one per rank"):
        loader_for(paths[0].parent, text_encoder, 0, 1).load_resharded_state(states_of(loaders)[1:])
