"""`SynthesisEngine`: one worker thread runs every request's synthesis, in rounds that share the AR batch.

A round takes the next sentence piece of every active job (at most `max_batch` jobs) through one batched AR
call (`lm.inference.streaming.run_round`: rows stop independently, chunks stream out as they are ready). Jobs
that arrive while a round runs wait in a bounded queue and join at the next round, so requests that arrive
together share the batch, and a long request does not hold the others back for more than one piece.

After a round in which jobs ended, the worker waits up to `join_wait_seconds` for as many new jobs as just
left, before it starts the next round: a client that sends its next request when the last one ends (most
do) arrives a few milliseconds after the round ended, and would otherwise wait a whole round. An idle
worker starts at once, so a lone request never waits.

When `max_batch` jobs are active and `max_waiting` wait, `submit` raises `EngineFull` (the server answers 503
with Retry-After) instead of queueing without bound. A cancelled job (its client went away) leaves the queue
at once, or stops its AR row at the next step and leaves the batch after the round.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lm.inference.streaming import StreamJob, run_round
from lm.inference.synthesizer import Synthesizer

log = logging.getLogger(__name__)

# called once when a job is over: None when it completed or was cancelled, else the error that ended it
FinishCallback = Callable[[BaseException | None], None]


class EngineFull(RuntimeError):
    """Every slot and every queue place is taken; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Entry:
    job: StreamJob
    on_finish: FinishCallback


@dataclass
class EngineStats:
    active: int
    waiting: int
    max_batch: int
    max_waiting: int
    rounds: int
    largest_round: int  # the most jobs that shared one AR batch so far
    mean_round: float  # jobs per round, on average
    completed: int
    cancelled: int
    failed: int


class SynthesisEngine:
    """See the module docstring. `start()` the worker, `submit(job, on_finish)` jobs, `stop()` at shutdown."""

    def __init__(self, synth: Synthesizer, max_batch: int = 8, max_waiting: int = 16,
                 join_wait_seconds: float = 0.05) -> None:
        if max_batch < 1 or max_waiting < 0 or join_wait_seconds < 0:
            raise ValueError(f"need max_batch >= 1, max_waiting >= 0 and join_wait_seconds >= 0, got "
                             f"{max_batch}, {max_waiting}, {join_wait_seconds}")
        self.synth, self.max_batch, self.max_waiting = synth, max_batch, max_waiting
        self.join_wait_seconds = join_wait_seconds
        self._cond = threading.Condition()
        self._waiting: deque[_Entry] = deque()
        self._active: list[_Entry] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._rounds = self._largest = self._completed = self._cancelled = self._failed = 0
        self._jobs_in_rounds = 0
        self._round_seconds = 1.0  # running mean, for Retry-After

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="synthesis-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel everything and end the worker (after the step it is in)."""
        with self._cond:
            self._stopping = True
            for entry in [*self._waiting, *self._active]:
                entry.job.cancel()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ---- requests -----------------------------------------------------------------------------------------
    def submit(self, job: StreamJob, on_finish: FinishCallback) -> None:
        """Queue a job; its chunks go to `job.sink` from the worker thread. Raises EngineFull when full."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            if len(self._active) + len(self._waiting) >= self.max_batch + self.max_waiting:
                waits = 1 + len(self._waiting) // self.max_batch
                raise EngineFull(max(1, math.ceil(waits * self._round_seconds)))
            self._waiting.append(_Entry(job, on_finish))
            self._cond.notify_all()

    def cancel(self, job: StreamJob) -> None:
        """The client went away: a waiting job leaves the queue now, an active one at its next AR step."""
        job.cancel()
        with self._cond:
            entry = next((e for e in self._waiting if e.job is job), None)
            if entry is not None:
                self._waiting.remove(entry)
                self._cancelled += 1
        if entry is not None:
            entry.on_finish(None)

    def stats(self) -> EngineStats:
        with self._cond:
            mean = round(self._jobs_in_rounds / self._rounds, 2) if self._rounds else 0.0
            return EngineStats(len(self._active), len(self._waiting), self.max_batch, self.max_waiting,
                               self._rounds, self._largest, mean, self._completed, self._cancelled,
                               self._failed)

    # ---- the worker ---------------------------------------------------------------------------------------
    def _work(self) -> None:
        ended = 0  # jobs that left in the last round
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stopping and not self._waiting and not self._active:
                        self._cond.wait()
                    self._wait_for_returns(ended)
                    if self._stopping:
                        break
                    while self._waiting and len(self._active) < self.max_batch:
                        self._active.append(self._waiting.popleft())
                    batch = list(self._active)
                ended = self._round(batch)
        for entry in [*self._waiting, *self._active]:
            entry.on_finish(None)

    def _wait_for_returns(self, ended: int) -> None:
        """Called with the lock held: give the clients of the `ended` jobs a moment to send their next request
        (until as many jobs as before are in, the batch is full, or `join_wait_seconds` are over)."""
        wanted = min(self.max_batch, len(self._active) + ended)
        deadline = time.monotonic() + self.join_wait_seconds
        while not self._stopping and len(self._active) + len(self._waiting) < wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)

    def _round(self, batch: list[_Entry]) -> int:
        """One round; -> how many jobs ended in it."""
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            run_round(self.synth, [e.job for e in batch])
        except Exception as e:  # a bad request must not end the worker: fail this round's jobs only
            log.exception("synthesis failed for %d job(s)", len(batch))
            error = e
        elapsed = time.perf_counter() - start
        ended = []
        with self._cond:
            self._rounds += 1
            self._largest = max(self._largest, len(batch))
            self._jobs_in_rounds += len(batch)
            self._round_seconds = 0.8 * self._round_seconds + 0.2 * elapsed
            for entry in batch:
                if error is not None or entry.job.done:
                    self._active.remove(entry)
                    ended.append(entry)
                    if error is not None:
                        self._failed += 1
                    elif entry.job.cancelled.is_set():
                        self._cancelled += 1
                    else:
                        self._completed += 1
        log.debug("round of %d job(s): %.2f s", len(batch), elapsed)
        for entry in ended:
            entry.on_finish(error)
        return len(ended)
