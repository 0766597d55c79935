"""The mechanics of streaming one sentence piece (lm/inference/streaming.py has the overview and the public
API).

A `PieceStream` follows one AR row: it asks for NAR work when the next chunk's window is available and for
decode work when a chunk's codes and the decoder context after them are final. `advance` collects that work
from every row of a round and runs it batched, one NAR call and one codec call per chunk step for all rows:
rows of a round share the chunk schedule and make one frame per AR step, so their windows are ready together,
and a batch of four costs little more than one on a CPU.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from codec.base import Codec
from lm.inference.nar_pass import generate_nar
from lm.inference.synthesis_types import _Row
from lm.inference.synthesizer import Synthesizer

if TYPE_CHECKING:
    from lm.inference.streaming import StreamJob

log = logging.getLogger(__name__)

# frames(n) -> (AR codes [A, n], phones [n] or None) of one row: the AR's output so far
FrameSource = Callable[[int], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class AudioChunk:
    """A piece of a stream. wav [T] float32 in [-1, 1]; the first chunk of every sentence piece after the
    first starts with the pause between pieces (`pause_samples` zeros), as `synthesize` joins them."""

    wav: np.ndarray
    sample_rate: int
    piece: int  # sentence piece index
    num_pieces: int
    text: str  # the piece's text
    first_frame: int  # of these frames, within the piece
    codes: torch.Tensor  # [Q, n] the codes these samples were decoded from
    pause_samples: int
    last_in_piece: bool
    last: bool  # the final chunk of the utterance
    seconds_since_start: float  # wall time from the request to this chunk
    seed: int
    hit_length_guard: bool = False  # last_in_piece only: the piece was cut by the length guard

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


def chunk_end(index: int, first: int, largest: int) -> int:
    """End frame of chunk `index` (0-based): chunk sizes first, 2*first, 4*first, ... capped at `largest`."""
    end, size = 0, first
    for _ in range(index + 1):
        end += size
        size = min(2 * size, largest)
    return end


# ---- the decoder's receptive field -----------------------------------------------------------------------
# codec -> (max_seconds asked for, (left, right))
_DECODER_CONTEXT: weakref.WeakKeyDictionary[Codec, tuple[float, tuple[int, int]]] = (
    weakref.WeakKeyDictionary())


@torch.inference_mode()
def decoder_context(codec: Codec, max_seconds: float = 2.0, tolerance: float = 1e-5) -> tuple[int, int]:
    """(left, right): the codes a decoder needs before and after a frame for that frame's samples to come out
    as in a decode of the whole sequence, at most `max_seconds` each. Cached per codec instance.

    Measured, not declared, so it holds for every backend: decode random codes, change the middle frame, and
    see how far the samples move. A convolution stack moves a fixed span and nothing beyond it (bit for bit),
    and that span is the answer (a causal decoder: right = 0). A side whose effect never quite stops (an
    LSTM's memory fades) gets the span where it stays above `tolerance`.
    """
    cached = _DECODER_CONTEXT.get(codec)
    if cached is not None and cached[0] == max_seconds:
        return cached[1]
    half = max(1, math.ceil(max_seconds * codec.frame_rate))
    width, hop = 2 * half + 1, codec.hop_length
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, codec.codebook_size, (1, codec.num_codebooks, width), generator=g)
    changed = codes.clone()
    changed[..., half] = (changed[..., half] + codec.codebook_size // 2) % codec.codebook_size
    moved = (codec.decode(changed) - codec.decode(codes))[0, 0].abs().view(width, hop).amax(dim=1)

    def span(threshold: float) -> tuple[int, int]:  # frames moved after and before the changed one
        frames = (moved > threshold).nonzero().flatten().tolist() or [half]
        return frames[-1] - half, half - frames[0]

    exact, fading = span(0.0), span(tolerance)
    after, before = (e if e < half else f for e, f in zip(exact, fading, strict=True))
    if max(after, before) >= half:
        log.warning("the codec decoder's memory reaches past %.1f s: stream joins are approximate there",
                    max_seconds)
    context = (min(half, after + 1), min(half, before + 1))  # +1: a frame of margin
    log.info("codec decoder context: %d frames before a chunk, %d after", *context)
    _DECODER_CONTEXT[codec] = (max_seconds, context)
    return context


# ---- one piece -------------------------------------------------------------------------------------------
@dataclass
class NarWork:
    """Fill codebooks A+1..Q of frames [low, high) of a piece; frames [start, end) of the result are kept."""

    stream: PieceStream
    low: int
    start: int
    end: int
    first: torch.Tensor  # [A, high - low] the AR's codes
    phones: torch.Tensor | None  # [high - low]


@dataclass
class DecodeWork:
    """Decode `window` (codes [Q, W]); its samples [cut_from, cut_to) are frames [start, end) of a piece."""

    stream: PieceStream
    start: int
    end: int
    last: bool
    window: torch.Tensor
    cut_from: int
    cut_to: int


class PieceStream:
    """One sentence piece of one job inside a round: collects the AR's frames, says what NAR and decode work
    is ready, takes the results, and hands finished samples to the job."""

    def __init__(self, synth: Synthesizer, job: StreamJob, row: _Row, context: tuple[int, int]) -> None:
        self.synth, self.job, self.row = synth, job, row
        cfg, rate = job.config, synth.codec.frame_rate
        self.first = max(1, round(cfg.first_chunk_seconds * rate))
        self.largest = max(self.first, round(cfg.max_chunk_seconds * rate))
        lookahead = cfg.nar_lookahead_seconds
        self.lookahead = None if lookahead is None else round(lookahead * rate)
        self.nar_context = round(cfg.nar_context_seconds * rate)
        self.decode_left, self.decode_right = context
        self.codes = torch.zeros(synth.model.config.num_codebooks, 0, dtype=torch.long)  # [Q, committed]
        self.nar_chunks = self.decode_chunks = 0
        self.emitted = 0  # frames decoded and sent
        self.available = 0  # frames the AR has made
        self.frames: FrameSource | None = None
        self.total: int | None = None  # the piece's length, once the AR has finished it
        self.hit_length_guard = False
        self.finished = False  # every frame sent
        # continuation mode: the prompt's tail is decoded before the target and cut off, as in `_decode`
        context_frames = 0
        if row.prompt_text_ids is not None:
            context_frames = min(row.prompt_codes.shape[-1], int(row.decode.decode_context_seconds * rate))
        self.prompt_context = row.prompt_codes[:, row.prompt_codes.shape[-1] - context_frames:].cpu()
        self.pause = int(round(row.decode.pause_seconds * synth.sample_rate)) if row.piece else 0

    @property
    def idle(self) -> bool:
        return self.finished or self.job.cancelled.is_set()

    def observe(self, frames: FrameSource, available: int, done: bool, hit_guard: bool) -> None:
        """The AR has made `available` frames of this piece (all of them when `done`); `frames(n)` returns
        the first n, fetched only when a chunk needs them."""
        self.frames, self.available = frames, available
        if done and self.total is None:
            self.total, self.hit_length_guard = available, hit_guard

    def nar_work(self) -> NarWork | None:
        """The next chunk's NAR window, once the AR is `lookahead` frames past it (or the piece is done). The
        NAR chunks are the decode chunks shifted by the decoder's right context, so each NAR step lets one
        decode step go."""
        start, total = self.codes.shape[-1], self.total
        if self.idle or self.frames is None or (total is not None and start >= total):
            return None
        if self.lookahead is None:  # the whole piece at once, as `synthesize`
            if total is None:
                return None
            low, end, high = 0, total, total
        else:
            # NAR chunk k reaches as far as decode chunk k needs: its frames plus the decoder's right context
            end = chunk_end(self.nar_chunks, self.first, self.largest) + self.decode_right
            high = end + self.lookahead
            if total is not None:
                end, high = min(end, total), min(high, total)
            elif self.available < high:
                return None
            low = max(0, start - self.nar_context)
        ar_codes, phones = self.frames(high)
        return NarWork(self, low, start, end, ar_codes[:, low:high],
                       phones[low:high] if phones is not None else None)

    def commit(self, work: NarWork, codes: torch.Tensor) -> None:
        """codes [Q, high - low]: the NAR's output for `work`'s window."""
        self.codes = torch.cat([self.codes, codes[:, work.start - work.low:work.end - work.low]], dim=-1)
        self.nar_chunks += 1

    def decode_work(self) -> DecodeWork | None:
        """The next chunk to decode, once its codes and the decoder context after it are final."""
        if self.idle:
            return None
        committed = self.codes.shape[-1]
        complete = self.total is not None and committed >= self.total
        end = chunk_end(self.decode_chunks, self.first, self.largest)
        if complete:
            end = min(end, committed)
        elif end + self.decode_right > committed:
            return None
        start, context, hop = self.emitted, self.prompt_context.shape[-1], self.synth.codec.hop_length
        sequence = torch.cat([self.prompt_context, self.codes], dim=-1)  # decode coordinates
        low = max(0, context + start - self.decode_left)
        high = min(sequence.shape[-1], context + end + self.decode_right)
        return DecodeWork(self, start, end, complete and end == committed, sequence[:, low:high],
                          (context + start - low) * hop, (context + end - low) * hop)

    def send(self, work: DecodeWork, wav: np.ndarray) -> None:
        """wav: the samples of `work`'s frames."""
        if not np.isfinite(wav).all():
            raise RuntimeError("the codec decoded non-finite samples (NaN/inf): check the model and codec "
                               "weights")
        wav = np.clip(wav, -1.0, 1.0)  # as `_join`: the codec can overshoot
        pause = self.pause if work.start == 0 else 0
        if pause:
            wav = np.concatenate([np.zeros(pause, dtype=np.float32), wav])
        job, row = self.job, self.row
        self.emitted, self.finished = work.end, work.last
        self.decode_chunks += 1
        job.emit(AudioChunk(
            wav=wav.astype(np.float32, copy=False), sample_rate=self.synth.sample_rate, piece=row.piece,
            num_pieces=len(job.rows), text=job.pieces[row.piece], first_frame=work.start,
            codes=self.codes[:, work.start:work.end], pause_samples=pause, last_in_piece=work.last,
            last=work.last and row.piece == len(job.rows) - 1,
            seconds_since_start=time.perf_counter() - job.started, seed=job.seed,
            hit_length_guard=self.hit_length_guard if work.last else False))


# ---- the work of all rows, batched -----------------------------------------------------------------------
def advance(synth: Synthesizer, streams: list[PieceStream], nar_generator: torch.Generator) -> None:
    """Run every NAR and decode step that is ready in any row: all rows' NAR windows in one NAR call, all
    decode windows of one length in one codec call, until nothing is ready."""
    while works := [w for s in streams if (w := s.nar_work()) is not None]:
        for work, codes in zip(works, _nar_batch(synth, works, nar_generator), strict=True):
            work.stream.commit(work, codes)
    while decodes := [w for s in streams if (w := s.decode_work()) is not None]:
        by_width: dict[int, list[DecodeWork]] = {}
        for work in decodes:
            by_width.setdefault(work.window.shape[-1], []).append(work)
        for group in by_width.values():  # the same width: no padding, whose codes would change the samples
            codec = synth.codec
            wavs = codec.decode(torch.stack([w.window for w in group]).to(codec.device))[:, 0]
            for work, wav in zip(group, wavs.float().cpu().numpy(), strict=True):
                work.stream.send(work, wav[work.cut_from:work.cut_to])


def _nar_batch(synth: Synthesizer, works: list[NarWork], generator: torch.Generator) -> list[torch.Tensor]:
    """Each work's window -> all codebooks [Q, W] (one NAR call: windows, texts and prompts padded; rows
    with another NAR temperature in calls of their own)."""
    model = synth.model
    if model.nar is None:
        return [w.first.cpu() for w in works]
    results: dict[int, torch.Tensor] = {}
    by_temperature: dict[float, list[int]] = {}
    for i, work in enumerate(works):
        by_temperature.setdefault(work.stream.row.decode.nar_temperature, []).append(i)
    device = model.ar.code_head.weight.device
    num_q = model.config.num_codebooks
    for temperature, members in by_temperature.items():
        group = [works[i] for i in members]
        rows = [w.stream.row for w in group]
        widths = torch.tensor([w.first.shape[-1] for w in group])
        text_lengths = torch.tensor([r.text_ids.numel() for r in rows])
        prompt_lengths = torch.tensor([r.prompt_codes.shape[-1] for r in rows])
        first = torch.zeros(len(group), group[0].first.shape[0], int(widths.max()), dtype=torch.long)
        text = torch.zeros(len(group), int(text_lengths.max()), dtype=torch.long)
        prompts = torch.zeros(len(group), num_q, int(prompt_lengths.max()), dtype=torch.long)
        phones = torch.zeros(len(group), int(widths.max()), dtype=torch.long) if group[0].phones is not None \
            else None
        for b, (work, row) in enumerate(zip(group, rows, strict=True)):
            first[b, :, :work.first.shape[-1]] = work.first.cpu()
            text[b, :row.text_ids.numel()] = row.text_ids.cpu()
            prompts[b, :, :row.prompt_codes.shape[-1]] = row.prompt_codes[:num_q].cpu()
            if phones is not None:
                phones[b, :work.phones.numel()] = work.phones.cpu()
        codes = generate_nar(model, text.to(device), text_lengths.to(device), prompts.to(device),
                             prompt_lengths.to(device), first.to(device), widths.to(device), temperature,
                             generator, frame_phones=phones.to(device) if phones is not None else None,
                             advance_generator=False)  # this generator serves only these NAR calls
        for b, i in enumerate(members):
            results[i] = codes[b, :, :int(widths[b])].cpu()
    return [results[i] for i in range(len(works))]
