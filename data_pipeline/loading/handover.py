"""Hand a training loader's position over to another number of ranks or workers (resume at another world
size), so that no sample is repeated and none is skipped.

A loader position is per *stream*: logical worker `worker` of `num_workers` on rank `rank` of `world_size`
reads a deterministic sequence of batch plans per epoch (data_pipeline/loading/loader.py). Those sequences
depend on the world size, so a position saved by A ranks means nothing to B ranks. What can be carried over
exactly is the *remainder* of every old stream's current epoch: the plans it had not handed out yet.

    old streams (A ranks x workers), each at (epoch e, batch k)
        --> sources: "plans k, k+1, ... of old stream s, epoch e"
        --> dealt to the new streams (B ranks x workers): several sources each when there are more
            sources than new streams, or one source split by stride (plans k+p, k+p+c, ...) when fewer
        --> each new stream finishes its sources one after another, then starts the new world's own
            epochs at `first_epoch` (one past every epoch the old streams were in)

Every old stream's epoch is therefore completed exactly once: the samples its first k batches held are
not seen again in that epoch, and the rest are all seen. The price is reading: a new stream replays an
old stream's epoch up to its position (plans only, as an ordinary resume does) and, when a source is split
by stride c, reads the whole remainder to use 1/c of it. A world-size change in the middle of a hand-over
is handled the same way: the unfinished sources become the next hand-over's sources.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StreamId:
    """One deterministic batch stream: logical worker `worker` of `num_workers` on rank `rank` of
    `world_size`. Its member index `rank + world_size * worker` among `world_size * num_workers` members
    says which shards (or samples) it reads."""

    rank: int
    world_size: int
    worker: int
    num_workers: int

    @property
    def member(self) -> int:
        return self.rank + self.world_size * self.worker

    @property
    def members(self) -> int:
        return self.world_size * self.num_workers


@dataclass
class HandoverSource:
    """Plans `start`, `start + stride`, ... of `stream`'s epoch `epoch`, up to the end of that epoch;
    `taken` of them have been handed out."""

    stream: StreamId
    epoch: int
    start: int
    stride: int = 1
    taken: int = 0

    @property
    def next_index(self) -> int:
        return self.start + self.stride * self.taken

    def to_dict(self) -> dict:
        return {**asdict(self), "stream": asdict(self.stream)}

    @staticmethod
    def from_dict(d: dict) -> HandoverSource:
        return HandoverSource(stream=StreamId(**d["stream"]), epoch=int(d["epoch"]), start=int(d["start"]),
                              stride=int(d["stride"]), taken=int(d["taken"]))


@dataclass
class HandoverPlan:
    """This rank's new positions: per logical worker its sources, and the epoch after them."""

    sources: list[list[HandoverSource]]  # [worker] -> sources, finished in order
    first_epoch: int
    old_world_size: int
    old_num_workers: int
    remaining: int  # sources over all new streams (for the log)


def _outstanding(states: list[dict]) -> tuple[list[HandoverSource], int]:
    """Every old stream's unfinished work, in member order, and the highest epoch any of them was in."""
    world, workers = states[0]["fingerprint"]["world_size"], states[0]["fingerprint"]["num_workers"]
    per_member: dict[int, list[HandoverSource]] = {}
    top_epoch = 0
    for state in states:
        rank = state["fingerprint"]["rank"]
        for worker, pos in enumerate(state["positions"]):
            if pos.get("done"):
                raise ValueError("a finished one-pass (validation) loader cannot be handed over")
            stream = StreamId(rank, world, worker, workers)
            top_epoch = max(top_epoch, int(pos["epoch"]))
            handover = [HandoverSource.from_dict(s) for s in pos.get("handover", [])]
            if handover:  # still finishing an earlier world's epochs: those remainders go on
                work = [HandoverSource(s.stream, s.epoch, s.next_index, s.stride) for s in handover]
            else:
                work = [HandoverSource(stream, int(pos["epoch"]), int(pos["batches"]))]
            per_member[stream.member] = work
    sources = [s for m in sorted(per_member) for s in per_member[m]]
    return sources, max([top_epoch, *(s.epoch + 1 for s in sources)])


def plan_handover(states: list[dict], rank: int, world_size: int, num_workers: int) -> HandoverPlan:
    """The positions of rank `rank` of `world_size` (with `num_workers` logical workers) that continue the
    loader states `states` (one per old rank, all of them, any order) without repeating or skipping a
    sample. The caller has checked that the states come from the same data and settings."""
    if not states:
        raise ValueError("no loader states to hand over")
    states = sorted(states, key=lambda s: s["fingerprint"]["rank"])
    old_world = states[0]["fingerprint"]["world_size"]
    ranks = [s["fingerprint"]["rank"] for s in states]
    if ranks != list(range(old_world)) or any(s["fingerprint"]["world_size"] != old_world for s in states):
        raise ValueError(f"loader states of ranks {ranks}: need exactly one per rank of a world of "
                         f"{old_world}")
    sources, top_epoch = _outstanding(states)
    members = world_size * num_workers
    mine: list[list[HandoverSource]] = []
    for worker in range(num_workers):
        member = StreamId(rank, world_size, worker, num_workers).member
        if len(sources) >= members:  # several whole sources each, dealt round robin
            mine.append([HandoverSource(s.stream, s.epoch, s.start, s.stride)
                         for s in sources[member::members]])
            continue
        # fewer sources than new streams: source j is shared by the streams j, j + S, j + 2S, ... by stride
        j, part = member % len(sources), member // len(sources)
        sharing = len(range(j, members, len(sources)))
        src = sources[j]
        mine.append([HandoverSource(src.stream, src.epoch, src.start + part * src.stride,
                                    src.stride * sharing)])
    return HandoverPlan(sources=mine, first_epoch=top_epoch, old_world_size=old_world,
                        old_num_workers=states[0]["fingerprint"]["num_workers"], remaining=len(sources))
