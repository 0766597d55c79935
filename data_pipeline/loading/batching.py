"""From a stream of tokenized utterances to padded `TTSBatch`es.

Stages (each a small iterator transform, all randomness from a `random.Random` passed in, so a stream
is reproducible from its seed, which is what makes the loader's resume exact):

  length filter -> speaker-prompt pairing -> (loader's shuffle buffer) -> length buckets with a frame
  budget -> `plan_batch` (prompt length and crop offsets) -> `collate` -> TTSBatch

Shape letters: B batch, Q codebooks, F frames, Fp prompt frames, L text tokens.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from data_pipeline.records import TTSBatch

TextEncoder = Callable[[str], Sequence[int]]


@dataclass
class BatchingConfig:
    """Length limits, prompt pairing and the batch budget. Durations in seconds, budgets in codec frames."""

    max_frames: int = 12000  # padded target frames per batch: B * max(F) <= max_frames
    max_batch_size: int = 256
    min_seconds: float = 0.5  # shorter targets are dropped (and counted)
    max_seconds: float = 20.0  # longer targets are dropped (and counted)
    prompt_min_seconds: float = 1.0
    prompt_max_seconds: float = 3.0
    # Length buckets grow geometrically by this ratio, so a batch's padding is at most 1 - 1/ratio of its
    # frames (about half that on average). None: one bucket (batches in arrival order).
    bucket_ratio: float | None = 1.05
    pairing_window: int = 64  # look-ahead, so a speaker's first utterance still finds a partner
    pairing_pool: int = 16  # recent utterances kept per speaker as prompt candidates
    pairing_max_speakers: int = 4096  # least recently seen speakers are forgotten beyond this

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, "
                             f"{self.max_seconds}")
        if not 0 < self.prompt_min_seconds <= self.prompt_max_seconds:
            raise ValueError("need 0 < prompt_min_seconds <= prompt_max_seconds, got "
                             f"{self.prompt_min_seconds}, {self.prompt_max_seconds}")
        if self.bucket_ratio is not None and self.bucket_ratio <= 1.0:
            raise ValueError(f"bucket_ratio must be > 1 (or None), got {self.bucket_ratio}")
        if self.max_frames < 1 or self.max_batch_size < 1:
            raise ValueError("max_frames and max_batch_size must be positive")


@dataclass
class Utterance:
    """One tokenized utterance as the loader reads it from a token shard."""

    key: str
    speaker: str  # "" when unknown: such an utterance is only ever prompted by a crop of itself
    text: str
    codes: np.ndarray  # [Q, F] integer codes
    frame_rate: float
    url: str = ""  # the shard it came from, for error messages
    phone_ids: np.ndarray | None = None  # [P] canonical phone ids (data_pipeline/alignment/phones.py)
    phone_durations: np.ndarray | None = None  # [P] frames per phone, summing to num_frames

    @property
    def frame_phones(self) -> np.ndarray | None:
        """[F] the phone id sounding at each frame, or None without an alignment."""
        if self.phone_ids is None or self.phone_durations is None:
            return None
        return np.repeat(self.phone_ids, self.phone_durations)

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def duration(self) -> float:
        return self.num_frames / self.frame_rate


@dataclass
class Paired:
    """A target utterance and the utterance its prompt is cut from."""

    target: Utterance
    prompt_source: Utterance  # another utterance of the speaker, or `target` itself when is_crop
    is_crop: bool


@dataclass
class BatchPlan:
    """Everything random about a batch, decided before any tensor is built (cheap to replay on resume)."""

    items: list[Paired]
    prompt_frames: int  # every prompt in the batch has this length, so prompts carry no padding
    prompt_starts: list[int]


def seconds_to_frames(seconds: float, frame_rate: float) -> int:
    return max(1, int(math.ceil(seconds * frame_rate - 1e-6)))


def length_rejection(utt: Utterance, cfg: BatchingConfig) -> str | None:
    """Why `utt` is outside the configured length range ("too_short" / "too_long"), or None.
    An utterance longer than the whole batch budget counts as too long."""
    if utt.duration < cfg.min_seconds:
        return "too_short"
    if utt.duration > cfg.max_seconds or utt.num_frames > cfg.max_frames:
        return "too_long"
    return None


class PromptPairer:
    """Pairs every utterance with a prompt source of the same speaker.

    Candidates are the speaker's recent utterances (a bounded pool of already-paired ones) and the
    utterances still in a small look-ahead window, minus the target itself and minus any shorter than
    the minimum prompt. Shards keep a speaker's utterances together, so the window lets even the first
    utterance of a speaker find a partner. Only when no candidate exists (or the speaker is unknown) is
    the prompt a crop of the target itself, and the pair records that.
    """

    def __init__(self, cfg: BatchingConfig, rng: random.Random):
        self.cfg = cfg
        self.rng = rng
        self._pool: OrderedDict[str, deque[Utterance]] = OrderedDict()

    def __call__(self, utts: Iterable[Utterance]) -> Iterator[Paired]:
        window: deque[Utterance] = deque()
        for utt in utts:
            window.append(utt)
            if len(window) > self.cfg.pairing_window:
                yield self._pair(window.popleft(), window)
        while window:
            yield self._pair(window.popleft(), window)

    def _pair(self, utt: Utterance, window: deque[Utterance]) -> Paired:
        paired = Paired(utt, utt, is_crop=True)
        if utt.speaker:
            min_frames = seconds_to_frames(self.cfg.prompt_min_seconds, utt.frame_rate)
            pool = self._pool.get(utt.speaker, ())
            candidates = [c for c in (*pool, *window)
                          if c.speaker == utt.speaker and c.key != utt.key and c.num_frames >= min_frames]
            if candidates:
                paired = Paired(utt, self.rng.choice(candidates), is_crop=False)
            self._remember(utt)
        return paired

    def _remember(self, utt: Utterance) -> None:
        pool = self._pool.pop(utt.speaker, None) or deque(maxlen=self.cfg.pairing_pool)
        pool.append(utt)
        self._pool[utt.speaker] = pool  # most recently seen speaker last
        while len(self._pool) > self.cfg.pairing_max_speakers:
            self._pool.popitem(last=False)


class BucketBatcher:
    """Dynamic batching by a padded-frame budget within geometric length buckets.

    A batch never exceeds `max_frames` padded target frames (B * max F) nor `max_batch_size`; a bucket
    is emitted as soon as one more utterance of its longest length could not fit, so full batches do not
    wait. At the end of the stream the partial buckets are emitted, shortest first.
    """

    def __init__(self, cfg: BatchingConfig):
        self.cfg = cfg
        self.bounds: list[float] = [cfg.max_seconds]  # upper bound (seconds) of each bucket
        if cfg.bucket_ratio is not None:
            self.bounds = []
            upper = cfg.min_seconds * cfg.bucket_ratio
            while upper < cfg.max_seconds:
                self.bounds.append(upper)
                upper *= cfg.bucket_ratio
            self.bounds.append(cfg.max_seconds)

    def bucket_of(self, seconds: float) -> int:
        return min(bisect.bisect_left(self.bounds, seconds), len(self.bounds) - 1)

    def __call__(self, items: Iterable[Paired]) -> Iterator[list[Paired]]:
        cfg = self.cfg
        buckets: dict[int, list[Paired]] = {}
        longest: dict[int, int] = {}
        for item in items:
            frames = item.target.num_frames
            b = self.bucket_of(item.target.duration)
            batch = buckets.get(b)
            if batch and (len(batch) + 1) * max(longest[b], frames) > cfg.max_frames:
                yield buckets.pop(b)
                batch = None
            if not batch:
                batch = buckets[b] = []
                longest[b] = 0
            batch.append(item)
            longest[b] = max(longest[b], frames)
            if self._full(batch, b, item.target.frame_rate):
                yield buckets.pop(b)
        for b in sorted(buckets):
            yield buckets[b]

    def _full(self, batch: list[Paired], b: int, frame_rate: float) -> bool:
        if len(batch) >= self.cfg.max_batch_size:
            return True
        if self.cfg.bucket_ratio is None:
            return False  # no upper bound known: the overflow check above closes the batch
        bucket_max = seconds_to_frames(self.bounds[b], frame_rate)
        return (len(batch) + 1) * bucket_max > self.cfg.max_frames


def plan_batch(items: list[Paired], cfg: BatchingConfig, rng: random.Random) -> BatchPlan:
    """Choose the batch's prompt length (uniform in the configured range, capped by the shortest source)
    and where each prompt is cut from its source. A crop of the target is capped at half of it (but at
    least the minimum prompt), so the prompt never covers a whole target."""
    frame_rate = items[0].target.frame_rate
    lo = seconds_to_frames(cfg.prompt_min_seconds, frame_rate)
    hi = seconds_to_frames(cfg.prompt_max_seconds, frame_rate)
    available = [min(item.target.num_frames, max(lo, item.target.num_frames // 2)) if item.is_crop
                 else item.prompt_source.num_frames for item in items]
    prompt_frames = max(1, min(rng.randint(lo, hi), *available))
    starts = [rng.randint(0, item.prompt_source.num_frames - prompt_frames) for item in items]
    return BatchPlan(items=items, prompt_frames=prompt_frames, prompt_starts=starts)


def collate(plan: BatchPlan, text_encoder: TextEncoder) -> TTSBatch:
    """Pad a planned batch into a `TTSBatch`. `text_encoder` maps a transcript to text-piece ids
    (e.g. `TextTokenizer.encode`); padding is 0 everywhere and excluded by the lengths."""
    items = plan.items
    num_codebooks = {item.target.codes.shape[0] for item in items} | {
        item.prompt_source.codes.shape[0] for item in items}
    if len(num_codebooks) != 1:
        keys = [item.target.key for item in items]
        raise ValueError(f"utterances {keys} have different codebook counts {sorted(num_codebooks)}; "
                         "set the loader's num_codebooks to truncate them to a common count")
    (num_q,) = num_codebooks
    size = len(items)
    frame_lengths = torch.tensor([item.target.num_frames for item in items], dtype=torch.long)
    codes = torch.zeros(size, num_q, int(frame_lengths.max()), dtype=torch.long)
    prompt_codes = torch.empty(size, num_q, plan.prompt_frames, dtype=torch.long)
    phones = _phone_tensors(plan, int(frame_lengths.max()))
    text = [list(text_encoder(item.target.text)) for item in items]
    text_lengths = torch.tensor([len(ids) for ids in text], dtype=torch.long)
    text_ids = torch.zeros(size, max(1, int(text_lengths.max())), dtype=torch.long)
    for i, (item, start) in enumerate(zip(items, plan.prompt_starts, strict=True)):
        codes[i, :, : item.target.num_frames] = torch.from_numpy(item.target.codes.astype(np.int64))
        window = item.prompt_source.codes[:, start: start + plan.prompt_frames]
        prompt_codes[i] = torch.from_numpy(window.astype(np.int64))
        text_ids[i, : len(text[i])] = torch.tensor(text[i], dtype=torch.long)
    return TTSBatch(
        keys=[item.target.key for item in items],
        speakers=[item.target.speaker for item in items],
        text_ids=text_ids,
        text_lengths=text_lengths,
        codes=codes,
        frame_lengths=frame_lengths,
        prompt_codes=prompt_codes,
        prompt_lengths=torch.full((size,), plan.prompt_frames, dtype=torch.long),
        prompt_is_crop=torch.tensor([item.is_crop for item in items], dtype=torch.bool),
        prompt_keys=[item.prompt_source.key for item in items],
        texts=[item.target.text for item in items],
        **phones,
    )


def _phone_tensors(plan: BatchPlan, max_frames: int) -> dict:
    """The alignment fields of a TTSBatch; rows without an alignment keep 0 (<none>) and length 0."""
    items = plan.items
    if all(item.target.phone_ids is None for item in items):
        return {}
    size = len(items)
    max_phones = max(len(item.target.phone_ids) for item in items if item.target.phone_ids is not None)
    phone_ids = torch.zeros(size, max_phones, dtype=torch.long)
    durations = torch.zeros(size, max_phones, dtype=torch.long)
    lengths = torch.zeros(size, dtype=torch.long)
    frame_phones = torch.zeros(size, max_frames, dtype=torch.long)
    prompt_phones = torch.zeros(size, plan.prompt_frames, dtype=torch.long)
    for i, (item, start) in enumerate(zip(items, plan.prompt_starts, strict=True)):
        target, source = item.target, item.prompt_source
        if target.phone_ids is not None:
            n = len(target.phone_ids)
            phone_ids[i, :n] = torch.from_numpy(target.phone_ids.astype(np.int64))
            durations[i, :n] = torch.from_numpy(target.phone_durations.astype(np.int64))
            lengths[i] = n
            frame_phones[i, : target.num_frames] = torch.from_numpy(target.frame_phones.astype(np.int64))
        if source.phone_ids is not None:
            window = source.frame_phones[start: start + plan.prompt_frames]
            prompt_phones[i] = torch.from_numpy(window.astype(np.int64))
    return {"phone_ids": phone_ids, "phone_durations": durations, "phone_lengths": lengths,
            "frame_phones": frame_phones, "prompt_phones": prompt_phones}


def padding_fraction(frame_lengths: torch.Tensor) -> float:
    """Share of a padded [B, F] target block that is padding."""
    total = frame_lengths.numel() * int(frame_lengths.max())
    return 1.0 - float(frame_lengths.sum()) / total
