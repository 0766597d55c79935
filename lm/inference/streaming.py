"""Streaming synthesis: audio comes out sentence by sentence, and within a sentence in chunks of frames while
the AR is still generating the rest.

    for chunk in synth.stream("Hello there. How are you?", prompt_wav, 22050, seed=1):
        play(chunk.wav)  # float32 at chunk.sample_rate

How a sentence piece streams (`StreamConfig` holds the knobs):
- The AR runs as in `synthesize`; a callback after each step (`lm.inference.ar_loop.ARStep`) hands the
  frames made so far to a `lm.inference.stream_pieces.PieceStream` for each row. Chunk k covers frames
  [b_k-1, b_k): the first chunk is `first_chunk_seconds` long and each next one twice the last, up to
  `max_chunk_seconds`, so the first audio comes early and later chunks cost few NAR calls.
- The NAR fills codebooks 2..Q of a chunk (and of the frames the decoder needs after it) once the AR is
  `nar_lookahead_seconds` past them, from a window of up to `nar_context_seconds` before them plus that
  lookahead. In `synthesize` the NAR is bidirectional over the whole sentence, so a chunk's codes 2..Q can
  differ from the one-shot ones (codebook 1 never does); with `nar_lookahead_seconds=None` the NAR waits for
  the end of the sentence and sees all of it, as `synthesize` does. Window boundaries depend only on frame
  counts, never on timing, so a stream is reproducible.
- The codec decodes each chunk with enough codes on both sides to cover its decoder's receptive field
  (`decoder_context`, measured once per codec), so the samples of a chunk are those of one decode of the
  whole sentence: the joins are seamless by construction, not by cross-fading.

How close the stream comes to `synthesize(text, ..., seed=s)` (tests/lm/test_streaming.py):
- codebook 1 (the AR's codes) is identical, sentence after sentence (the random stream is consumed as in
  `synthesize`);
- with `nar_lookahead_seconds=None`, and for models without a NAR, the waveform equals the one-shot waveform
  within 1e-4: exactly for a convolutional decoder (the 16 kHz RVQ codec), within ~1e-5 for a decoder with a
  fading memory (EnCodec's LSTM), whose effect past the measured context is below `decoder_context`'s
  tolerance;
- with a chunked NAR the waveform equals one decode of the streamed codes within 1e-4 (no seams), while the
  codes 2..Q follow from the NAR's shorter window.

Several requests stream together through `run_round` (one sentence piece of each, one AR batch, rows
stopping independently; their NAR and decode steps batched too, `lm.inference.stream_pieces.advance`): the
server (`serving.engine`) is built on it. A job whose NAR waits for whole sentences and whose decoding asks
for best of N (`StreamJob.reads_best_of_n`: the server's whole-file replies) draws a piece's N readings in one
batch instead and sends the kept one as the piece's only chunk; it can be cancelled between pieces, not inside
one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lm.inference.ar_loop import ARStep
from lm.inference.generate import generate
from lm.inference.prompt_audio import mix_seeds
from lm.inference.row_batches import draws
from lm.inference.stream_pieces import AudioChunk, FrameSource, PieceStream, advance, decoder_context
from lm.inference.synthesis_types import DecodeConfig, SynthesisError, Voice
from lm.inference.synthesizer import Synthesizer

log = logging.getLogger(__name__)

__all__ = ["AudioChunk", "StreamConfig", "StreamJob", "decoder_context", "run_round", "stream_utterance"]


@dataclass
class StreamConfig:
    """Chunking of a stream (see the module docstring); seconds are turned into frames at the codec rate."""

    first_chunk_seconds: float = 0.25
    max_chunk_seconds: float = 2.0
    # None: the NAR waits for the end of the sentence (the stream then equals `synthesize`'s audio)
    nar_lookahead_seconds: float | None = 0.25
    nar_context_seconds: float = 6.0
    max_decoder_context_seconds: float = 2.0

    def validate(self) -> None:
        if not 0 < self.first_chunk_seconds <= self.max_chunk_seconds:
            raise SynthesisError(f"need 0 < first_chunk_seconds <= max_chunk_seconds, got "
                                 f"{self.first_chunk_seconds}, {self.max_chunk_seconds}")
        if self.nar_lookahead_seconds is not None and self.nar_lookahead_seconds < 0:
            raise SynthesisError(f"nar_lookahead_seconds must be >= 0 or None, got "
                                 f"{self.nar_lookahead_seconds}")
        if self.nar_context_seconds < 0 or self.max_decoder_context_seconds <= 0:
            raise SynthesisError("nar_context_seconds must be >= 0 and max_decoder_context_seconds > 0")


# ---- one request -----------------------------------------------------------------------------------------
class StreamJob:
    """One utterance being streamed: its sentence pieces (AR rows, in order), seeds, and where chunks go.

    `sink` receives each `AudioChunk`; `run_round` takes the job's next piece each time it is called.
    """

    def __init__(self, synth: Synthesizer, text: str, voice: Voice, seed: int | None = None,
                 config: StreamConfig | None = None, decode: dict[str, Any] | None = None,
                 sink: Callable[[AudioChunk], None] | None = None) -> None:
        self.config = config or StreamConfig()
        self.config.validate()
        self.decode: DecodeConfig = synth.defaults.updated(decode or {})
        self.rows, self.pieces = synth.plan(text, voice, self.decode)
        for row in self.rows:  # a piece that cannot fit the model fails here, not inside a shared batch
            synth.batch_inputs([row])
        self.seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()))
        # the AR's random stream, kept across the job's pieces exactly as `synthesize` keeps it
        self.generator = torch.Generator(device=synth.device).manual_seed(self.seed)
        self.sink = sink
        self.next_piece = 0
        self.started = time.perf_counter()
        self.cancelled = threading.Event()
        self.hit_length_guard: list[bool] = []

    @property
    def done(self) -> bool:
        return self.cancelled.is_set() or self.next_piece >= len(self.rows)

    @property
    def reads_best_of_n(self) -> bool:
        """A whole-piece job (the NAR waits for the end of every piece) with best of N: nothing of a piece is
        sent before its readings are finished, so the job can keep the best one, as `synthesize` does."""
        return self.config.nar_lookahead_seconds is None and draws(self.decode) > 1

    def cancel(self) -> None:
        """Stop generating for this job: its AR row stops at the next step, its later pieces never start."""
        self.cancelled.set()

    def emit(self, chunk: AudioChunk) -> None:
        if self.sink is not None and not self.cancelled.is_set():
            self.sink(chunk)


# ---- a round: one piece of every job, one AR batch -------------------------------------------------------
def _round_generator(jobs: list[StreamJob], device: torch.device) -> torch.Generator:
    """A lone job keeps its own random stream (so it reproduces `synthesize`); jobs that share a batch share
    one, seeded from all of their seeds and pieces (reproducible for the same batch)."""
    if len(jobs) == 1:
        return jobs[0].generator
    generator = torch.Generator(device=device)
    generator.manual_seed(mix_seeds([j.seed * 1009 + j.next_piece for j in jobs]))
    return generator


def run_round(synth: Synthesizer, jobs: list[StreamJob]) -> None:
    """Generate the next sentence piece of every job in one AR batch (rows stop independently), streaming
    each row's chunks to its job as they are ready. A cancelled job's row stops at the next AR step."""
    jobs = [j for j in jobs if not j.done]
    best_of_n = [j for j in jobs if j.reads_best_of_n]
    if best_of_n:
        _best_of_n_round(synth, best_of_n)
    jobs = [j for j in jobs if not j.reads_best_of_n]
    if not jobs:
        return
    rows = [j.rows[j.next_piece] for j in jobs]
    device = synth.device
    generator = _round_generator(jobs, device)
    context = decoder_context(synth.codec, max(j.config.max_decoder_context_seconds for j in jobs))
    nar_generator = torch.Generator(device=device).manual_seed(mix_seeds([j.seed + 1 for j in jobs]))
    streams = [PieceStream(synth, j, r, context) for j, r in zip(jobs, rows, strict=True)]
    num_delayed = synth.model.config.ar_codebooks - 1

    def frame_source(view: ARStep, b: int) -> FrameSource:
        def frames(n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
            codes = view.codes[b, None, :n]
            if num_delayed:
                codes = torch.cat([codes, view.delayed_codes[b, :, :n]], dim=0)
            phones = view.frame_phones[b, :n].cpu() if view.frame_phones is not None else None
            return codes.cpu(), phones
        return frames

    def on_step(view: ARStep) -> torch.Tensor | None:
        finished = view.finished.tolist()
        lengths = view.lengths.tolist() if any(finished) else []
        complete = view.complete_frames()
        for b, stream in enumerate(streams):
            if not stream.idle:
                stream.observe(frame_source(view, b), lengths[b] if finished[b] else complete, finished[b],
                               finished[b] and bool(view.hit_length_guard[b]))
        advance(synth, streams, nar_generator)
        cancelled = [j.cancelled.is_set() for j in jobs]
        return torch.tensor(cancelled) if any(cancelled) else None

    sampling, requests = synth.batch_inputs(rows)
    with torch.inference_mode():
        out = generate(synth.model, requests, sampling, generator, compile_step=synth.compile_step,
                       on_step=on_step, run_nar=False)
        if len(jobs) == 1:  # a shared round's generator is thrown away: only a lone job's stream goes on
            _skip_one_shot_nar_draws(synth, generator, 1, int(out.frame_lengths.max()))
    for job, stream in zip(jobs, streams, strict=True):
        if not job.cancelled.is_set() and not stream.finished:  # every row ends inside on_step; a guard
            raise RuntimeError(f"piece {stream.row.piece} ended without sending its last chunk")
        job.hit_length_guard.append(stream.hit_length_guard)
        job.next_piece += 1


def _best_of_n_round(synth: Synthesizer, jobs: list[StreamJob]) -> None:
    """The next piece of every best-of-N job: its readings drawn in one AR batch (`Synthesizer.read_best`),
    the kept one sent as the piece's one chunk. A lone job draws from its own random stream, so its audio
    equals `synthesize`'s for the same seed."""
    rows = [j.rows[j.next_piece] for j in jobs]
    with torch.inference_mode():
        kept = synth.read_best(rows, _round_generator(jobs, synth.device))
    for job, row, (reading, _) in zip(jobs, rows, kept, strict=True):
        pause = int(round(row.decode.pause_seconds * synth.sample_rate)) if row.piece else 0
        wav = np.clip(reading.wav, -1.0, 1.0).astype(np.float32)
        job.emit(AudioChunk(
            wav=np.concatenate([np.zeros(pause, np.float32), wav]), sample_rate=synth.sample_rate,
            piece=row.piece, num_pieces=len(job.rows), text=job.pieces[row.piece], first_frame=0,
            codes=reading.codes, pause_samples=pause, last_in_piece=True, last=row.piece == len(job.rows) - 1,
            seconds_since_start=time.perf_counter() - job.started, seed=job.seed,
            hit_length_guard=reading.hit_length_guard))
        job.hit_length_guard.append(reading.hit_length_guard)
        job.next_piece += 1


def _skip_one_shot_nar_draws(synth: Synthesizer, generator: torch.Generator, rows: int, width: int) -> None:
    """Advance the AR's random stream as `synthesize`'s NAR passes would have (each pass draws noise for
    [rows * width, K] logits, even when greedy), so the next piece samples the same codes as there. The
    stream's own NAR calls draw from another generator."""
    cfg = synth.model.config
    if synth.model.nar is None:
        return
    for _ in range(cfg.num_codebooks - cfg.ar_codebooks):
        torch.empty(rows * width, cfg.codebook_size, device=generator.device).exponential_(1.0,
                                                                                          generator=generator)


# ---- Synthesizer.stream ----------------------------------------------------------------------------------
_END = object()


@dataclass
class _Failure:
    error: BaseException


def stream_utterance(synth: Synthesizer, text: str, voice: Voice, seed: int | None = None,
                     config: StreamConfig | None = None, decode: dict[str, Any] | None = None
                     ) -> Iterator[AudioChunk]:
    """What `Synthesizer.stream` returns: the job is planned now (bad input raises here), generation runs in
    a worker thread while the caller consumes chunks; closing the iterator cancels it."""
    chunks: queue.Queue[Any] = queue.Queue()
    job = StreamJob(synth, text, voice, seed=seed, config=config, decode=decode, sink=chunks.put)

    def work() -> None:
        try:
            while not job.done:
                run_round(synth, [job])
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, who re-raises it
            chunks.put(_Failure(e))
        finally:
            chunks.put(_END)

    def consume() -> Iterator[AudioChunk]:
        worker = threading.Thread(target=work, name="stream", daemon=True)
        worker.start()
        try:
            while (item := chunks.get()) is not _END:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            job.cancel()
            worker.join()

    return consume()
