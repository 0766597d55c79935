"""The training / validation loader over token shards, with an exactly resumable position.

    shards --(seed, epoch) order--> this rank's share --> this worker's share --> tar samples
      --> length filter --> speaker-prompt pairing --> shuffle buffer --> length buckets
      --> BatchPlan --> collate --> TTSBatch

Determinism is the resume mechanism: one (rank, logical worker, epoch) stream is a pure function of the
seed, the shard list and the config. The main process counts the batches it has handed out per logical
worker; a restored loader replays each worker's current epoch up to that count, building only the cheap
`BatchPlan`s (no collate, no text tokenisation), then yields exactly the batches an uninterrupted loader
would have yielded next. DataLoader workers hand out batches round-robin, so the restored loader also
rotates which logical worker is physical worker 0, so the interleaving continues where it stopped.
Replay reads the current epoch's share of shards up to the position: cost bounded by one epoch per worker.
A position saved at another number of ranks or workers is handed over by `load_resharded_state`
(data_pipeline/loading/handover.py): the new streams finish the old streams' current epochs, then go on.

Fewer shards than ranks x workers (a small fine-tuning set on a big node): every stream reads every shard
and keeps every (ranks x workers)-th sample instead of owning whole shards; the same determinism holds.

Token shards are read by token_reader.py: corrupt samples (unreadable tar members, bad JSON / npy, shapes
that disagree with the metadata) are logged with the shard URL and key, counted in `stats`, and skipped; the
run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_pipeline.loading.batching import (
    BatchingConfig,
    BatchPlan,
    BucketBatcher,
    PromptPairer,
    TextEncoder,
    Utterance,
    collate,
    length_rejection,
    plan_batch,
)
from data_pipeline.loading.handover import HandoverSource, StreamId, plan_handover
from data_pipeline.loading.token_reader import LoaderStats, read_token_shard
from data_pipeline.records import TTSBatch
from data_pipeline.sharding import expand_shards, process_place, split_shards

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class LoaderConfig:
    """Where the token shards are and how to stream them. Batch shape limits live in `batching`."""

    shards: str | list[str]  # dir, glob, brace pattern, `pipe:` / http URL, or a list of them
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    infinite: bool = True  # True: endless epochs (training); False: one pass, then stop (validation)
    shuffle_shards: bool = True
    shuffle_buffer: int = 1000  # samples; 0 keeps shard order
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes per rank
    prefetch_factor: int = 2
    num_codebooks: int | None = None  # keep the first N codebooks; samples with fewer are skipped
    rank: int | None = None  # None: from torch.distributed or RANK / WORLD_SIZE
    world_size: int | None = None


@dataclass
class _Position:
    """Where one logical worker stands: batches handed out in its current epoch."""

    epoch: int = 0
    batches: int = 0
    done: bool = False  # finite mode: this worker's pass is complete
    epoch_start: LoaderStats = field(default_factory=LoaderStats)  # counters when the epoch began
    latest: LoaderStats = field(default_factory=LoaderStats)
    # sources still to finish before `epoch` (after a resume at another world size); [] otherwise
    handover: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> _Position:
        return _Position(epoch=d["epoch"], batches=d["batches"], done=d["done"],
                         epoch_start=LoaderStats(**d["epoch_start"]), latest=LoaderStats(**d["latest"]),
                         handover=list(d.get("handover", [])))  # absent in states written before it


@dataclass
class _Tag:
    """Sent with every batch from a worker to the main process."""

    worker: int
    epoch: int
    batch_index: int
    stats: LoaderStats
    epoch_start: LoaderStats
    done: bool = False  # finite mode end-of-pass marker (carries no batch)
    handover: list[dict] = field(default_factory=list)  # the worker's hand-over sources after this batch


def _shuffle(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """Streaming shuffle buffer of `size` items."""
    buffer: list = []
    for item in items:
        if size <= 1:
            yield item
            continue
        buffer.append(item)
        if len(buffer) >= size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class _TokenStream(IterableDataset):
    """What runs inside each DataLoader worker (or in the main process when num_workers == 0)."""

    def __init__(self, cfg: LoaderConfig, shards: list[str], rank: int, world_size: int,
                 text_encoder: TextEncoder, positions: list[_Position], rotation: int):
        super().__init__()
        self.cfg, self.shards, self.rank, self.world_size = cfg, shards, rank, world_size
        self.text_encoder = text_encoder
        self.positions, self.rotation = positions, rotation

    def _rng(self, *parts: object) -> random.Random:
        return random.Random("/".join(str(p) for p in (self.cfg.seed, *parts)))

    def epoch_utterances(self, stream: StreamId, epoch: int, stats: LoaderStats) -> Iterator[Utterance]:
        """One stream's utterances of one epoch: its share of the shards, or with fewer shards than
        streams, its share of the samples (every stream reads every shard in the same order)."""
        order = list(self.shards)
        if self.cfg.shuffle_shards:
            self._rng("shards", epoch).shuffle(order)  # same order on every rank and worker
        num_codebooks = self.cfg.num_codebooks
        if split_mode(len(order), stream.members) == "shard":
            mine = split_shards(split_shards(order, stream.rank, stream.world_size), stream.worker,
                                stream.num_workers)
            for url in mine:
                yield from read_token_shard(url, stats, num_codebooks)
            return
        counter = iter(range(1 << 62))  # the sample index across this epoch's shards

        def keep() -> bool:
            return next(counter) % stream.members == stream.member

        for url in order:
            yield from read_token_shard(url, stats, num_codebooks, keep)

    def epoch_plans(self, stream: StreamId, epoch: int, stats: LoaderStats) -> Iterator[BatchPlan]:
        """The deterministic batch plans of one (rank, worker, epoch)."""
        cfg, bcfg = self.cfg, self.cfg.batching
        tag = (stream.rank, stream.worker, epoch)

        def kept(utts: Iterable[Utterance]) -> Iterator[Utterance]:
            for utt in utts:
                reason = length_rejection(utt, bcfg)
                if reason is None:
                    yield utt
                else:
                    setattr(stats, reason, getattr(stats, reason) + 1)

        utts = kept(self.epoch_utterances(stream, epoch, stats))
        paired = PromptPairer(bcfg, self._rng("pair", *tag))(utts)
        shuffled = _shuffle(paired, cfg.shuffle_buffer, self._rng("shuffle", *tag))
        plan_rng = self._rng("plan", *tag)
        for items in BucketBatcher(bcfg)(shuffled):
            yield plan_batch(items, bcfg, plan_rng)

    def _handover(self, pos: _Position, worker: int, stats: LoaderStats
                  ) -> Iterator[tuple[_Tag, TTSBatch | None]]:
        """The rest of other streams' epochs this worker took over (resume at another world size)."""
        sources = [HandoverSource.from_dict(s) for s in pos.handover]
        epoch_start = LoaderStats(**asdict(stats))
        while sources:
            src = sources[0]
            for index, plan in enumerate(self.epoch_plans(src.stream, src.epoch, stats)):
                if index != src.next_index:
                    continue  # before the position, or another new stream's share of this source
                src.taken += 1
                stats.batches += 1
                yield (_Tag(worker, pos.epoch, -1, LoaderStats(**asdict(stats)), epoch_start,
                            handover=[s.to_dict() for s in sources]), collate(plan, self.text_encoder))
            sources.pop(0)

    def __iter__(self) -> Iterator[tuple[_Tag, TTSBatch | None]]:
        info = get_worker_info()
        num_workers = info.num_workers if info is not None else 1
        worker = ((info.id if info is not None else 0) + self.rotation) % num_workers
        pos = self.positions[worker]
        if pos.done:
            return
        stream = StreamId(self.rank, self.world_size, worker, num_workers)
        stats = LoaderStats(**asdict(pos.epoch_start))
        yield from self._handover(pos, worker, stats)
        epoch, skip = pos.epoch, pos.batches
        while True:
            epoch_start = LoaderStats(**asdict(stats))
            count = 0
            for count, plan in enumerate(self.epoch_plans(stream, epoch, stats), start=1):
                stats.batches += 1
                if count <= skip:
                    continue  # replaying up to the restored position: no collate
                batch = collate(plan, self.text_encoder)
                yield _Tag(worker, epoch, count - 1, LoaderStats(**asdict(stats)), epoch_start), batch
            if not self.cfg.infinite:
                yield _Tag(worker, epoch, count, LoaderStats(**asdict(stats)), epoch_start, done=True), None
                return
            if count == 0:
                raise RuntimeError(f"rank {self.rank} worker {worker}: a whole epoch gave no batch "
                                   f"(stats {stats}, {len(self.shards)} shards for {stream.members} ranks x "
                                   f"workers); check the shards and the length limits")
            epoch, skip = epoch + 1, 0


def split_mode(num_shards: int, members: int) -> str:
    """'shard': each of `members` streams (ranks x workers) owns whole shards; 'sample': fewer shards
    than streams, so each stream reads all of them and keeps every `members`-th sample."""
    return "shard" if num_shards >= members else "sample"


class TokenLoader:
    """Iterate `TTSBatch`es from token shards; `state_dict()` / `load_state_dict()` resume exactly.

    Training (`infinite=True`): endless epochs, a new shard order per epoch from (seed, epoch); a
    restored loader yields exactly the batches an uninterrupted one would have yielded next.
    Validation (`infinite=False`): each `iter()` is one pass over this rank's share, then stops; a pass
    resumed mid-way yields each remaining batch once, though with several workers the interleaving after
    a worker has finished may differ. Iterating again after a `break` continues from the current position.
    Ranks may get different numbers of batches per pass: aggregate validation metrics after the pass.
    """

    def __init__(self, config: LoaderConfig, text_encoder: TextEncoder):
        self.config = config
        self.text_encoder = text_encoder
        self.shards = expand_shards(config.shards)
        if not self.shards:
            raise ValueError(f"no token shards match {config.shards!r}")
        place = process_place(config.rank, config.world_size)
        self.rank, self.world_size = place.rank, place.world_size
        self.num_workers = max(1, config.num_workers)
        members = self.world_size * self.num_workers
        self.split = split_mode(len(self.shards), members)
        if self.split == "sample":
            # a small set on many ranks: whole shards would leave some streams without data
            log.info("%d token shard(s) for %d rank(s) x %d worker(s): splitting by sample (every stream "
                     "reads every shard and keeps 1 sample in %d), not by shard", len(self.shards),
                     self.world_size, self.num_workers, members)
        self._reset()

    def _reset(self) -> None:
        self._positions = [_Position() for _ in range(self.num_workers)]
        self._next_worker = 0

    @property
    def stats(self) -> LoaderStats:
        """Counters summed over this rank's workers, up to the last batch handed out."""
        total = LoaderStats()
        for pos in self._positions:
            total = total + pos.latest
        return total

    def __iter__(self) -> Iterator[TTSBatch]:
        cfg = self.config
        if not cfg.infinite and all(p.done for p in self._positions):
            self._reset()  # the last pass is complete (its stats stay readable until now): start a new one
        dataset = _TokenStream(cfg, self.shards, self.rank, self.world_size, self.text_encoder,
                               [_Position.from_dict(p.to_dict()) for p in self._positions], self._next_worker)
        if cfg.num_workers > 0:
            source: Iterable = DataLoader(dataset, batch_size=None, num_workers=cfg.num_workers,
                                          prefetch_factor=cfg.prefetch_factor)
        else:
            source = dataset
        for tag, batch in source:
            pos = self._positions[tag.worker]
            pos.epoch, pos.batches, pos.done = tag.epoch, tag.batch_index + 1, tag.done
            pos.epoch_start, pos.latest, pos.handover = tag.epoch_start, tag.stats, tag.handover
            self._next_worker = (tag.worker + 1) % self.num_workers
            if batch is not None:
                yield batch

    def state_dict(self) -> dict:
        """JSON-serialisable position of this rank's loader (save one per rank)."""
        return {
            "version": STATE_VERSION,
            "fingerprint": self._fingerprint(),
            "next_worker": self._next_worker,
            "positions": [p.to_dict() for p in self._positions],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} != {STATE_VERSION}")
        mine = self._fingerprint()
        for name, value in state["fingerprint"].items():
            if mine.get(name) != value:
                raise ValueError(f"cannot resume the loader exactly: {name} was {value!r}, "
                                 f"now {mine.get(name)!r}")
        self._positions = [_Position.from_dict(p) for p in state["positions"]]
        self._next_worker = int(state["next_worker"])

    def load_resharded_state(self, states: list[dict]) -> str:
        """Continue from the states of *every* rank of a run with another number of ranks or workers (a
        training loader only): this rank's streams finish the old streams' current epochs from where
        they stopped, then start new epochs (data_pipeline/loading/handover.py). No sample is repeated or
        skipped. Returns a one-line description for the log."""
        if not self.config.infinite:
            raise ValueError("only a training (infinite) loader can continue at another world size")
        mine = self._fingerprint()
        for state in states:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"loader state version {state.get('version')} != {STATE_VERSION}")
            for name, value in state["fingerprint"].items():
                if name not in ("rank", "world_size", "num_workers") and mine.get(name) != value:
                    raise ValueError(f"cannot hand the loader position over: {name} was {value!r}, "
                                     f"now {mine.get(name)!r}")
        plan = plan_handover(states, self.rank, self.world_size, self.num_workers)
        self._positions = [_Position(epoch=plan.first_epoch, handover=[s.to_dict() for s in sources])
                           for sources in plan.sources]
        self._next_worker = 0
        return (f"data: {plan.old_world_size} rank(s) x {plan.old_num_workers} worker(s) -> "
                f"{self.world_size} x {self.num_workers}; the {plan.remaining} unfinished stream epoch(s) "
                f"are finished from where they stopped (no sample repeated or skipped), then epoch "
                f"{plan.first_epoch} starts; split by {self.split}")

    def _fingerprint(self) -> dict:
        cfg = self.config
        settings = json.dumps({"batching": asdict(cfg.batching), "shuffle_buffer": cfg.shuffle_buffer,
                               "shuffle_shards": cfg.shuffle_shards, "num_codebooks": cfg.num_codebooks,
                               "infinite": cfg.infinite}, sort_keys=True)
        return {
            "seed": cfg.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "shards": hashlib.sha1("\n".join(self.shards).encode()).hexdigest(),
            "settings": hashlib.sha1(settings.encode()).hexdigest(),
        }


def build_loader(shards: str | list[str], text_encoder: TextEncoder, **overrides: object) -> TokenLoader:
    """Shorthand: `build_loader("runs/tokens", tok.encode, infinite=False, num_workers=2)`; keys of
    `BatchingConfig` (e.g. `max_frames=8000`) go to the batching config."""
    batching_names = {f.name for f in fields(BatchingConfig)}
    batching = BatchingConfig(**{k: v for k, v in overrides.items() if k in batching_names})
    rest = {k: v for k, v in overrides.items() if k not in batching_names}
    return TokenLoader(LoaderConfig(shards=shards, batching=batching, **rest), text_encoder)
