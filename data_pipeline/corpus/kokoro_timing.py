"""Exact phone timings for Kokoro clips, from the model's own durations.

Kokoro (StyleTTS 2) predicts how many 25 ms frames each input symbol lasts and renders exactly that many:
the audio is sum(durations) x 600 samples at 24 kHz. The int8 ONNX export computes those durations as
the tensor `/encoder/Clip_output_0` but returns only the audio, so `duration_model_path()` writes (once,
cached) a copy of the model whose second output is that tensor. A Kokoro clip then gets the same kind of
exact `.align.json` sidecar as an espeak-ng or flite clip, instead of a forced alignment (whose timings
made the earlier natural-corpus A/B read worse; README, "Natural corpus").

Symbols -> canonical phones: Kokoro's own letters (A = ey, I = ay, W = aw, O / Q = ow, Y = oy, ʤ, ʧ, ᵊ)
and r-coloured vowels are mapped here, every other IPA letter by `espeak_to_canonical`; a stress mark's
frames go to the phone after it; a space's frames are shared by the phones on both sides (Kokoro gives
word boundaries 1-3 frames, rarely silence); punctuation and the start / end symbols are pauses. The
sound leads its frames by ~50 ms (LEAD_SECONDS, measured), so every boundary moves that much earlier.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_pipeline.alignment.phones import PAUSE, espeak_to_canonical
from data_pipeline.alignment.schema import Alignment, PhoneSpan, WordSpan, fill_pauses, transcript_words

FRAME_SAMPLES = 600  # at 24 kHz: 40 duration frames a second
DURATION_TENSOR = "/encoder/Clip_output_0"
ALIGNER = "kokoro-v1.0 durations (exact)"
# The sound of a symbol starts this long before its first duration frame. Measured against the forced
# aligner on 12 held-out sentences (scripts/experiments/kokoro_timing_check.py --fit): per clip, aligner
# time = 0.99-1.00 x duration time - 31..69 ms (median 52). hexgrad's own Kokoro timestamps subtract 3
# frames (75 ms) at the start for the same reason.
LEAD_SECONDS = 0.05

_KOKORO_LETTERS = {"A": ("ey",), "I": ("ay",), "W": ("aw",), "O": ("ow",), "Q": ("ow",), "Y": ("oy",),
                   "ʤ": ("jh",), "ʧ": ("ch",), "ᵊ": ("ax",), "ɹ": ("r",)}
_DIGRAPHS = {"ɜɹ": ("er",), "əɹ": ("er",)}  # one sound spelled with two symbols: their frames add up
_STRESS = "ˈˌ"
_SPACE = " "


class KokoroTimingError(RuntimeError):
    """The Kokoro model has no duration tensor, or `onnx` (to expose it) is not installed."""


def duration_model_path(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A copy of the Kokoro ONNX model at `source` with the per-symbol durations as a second output,
    written once into `cache_dir` (default $CODECTTS_CACHE or ~/.cache/codectts) and reused after."""
    source = Path(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(cache_dir or os.environ.get("CODECTTS_CACHE") or Path.home() / ".cache" / "codectts")
    target = cache / f"kokoro-durations-{digest}.onnx"
    if target.is_file():
        return target
    try:
        import onnx
    except ImportError as e:
        raise KokoroTimingError("exact Kokoro timings need the onnx package: pip install '.[voices]'") from e
    model = onnx.load(str(source))
    if not any(DURATION_TENSOR in node.output for node in model.graph.node):
        raise KokoroTimingError(f"{source}: no {DURATION_TENSOR} tensor (another Kokoro export?)")
    model.graph.output.append(onnx.helper.make_tensor_value_info(DURATION_TENSOR, onnx.TensorProto.FLOAT,
                                                                 None))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # workers are threads
    onnx.save(model, str(tmp))
    tmp.replace(target)  # atomic: parallel corpus workers may race to write it
    return target


def _symbol_phones(symbol: str) -> tuple[str, ...]:
    if symbol in _KOKORO_LETTERS:
        return _KOKORO_LETTERS[symbol]
    return espeak_to_canonical(symbol)


def chunk_phones(symbols: str, frames: Sequence[int]) -> list[tuple[str, int, int, int]]:
    """One Kokoro input chunk: its symbols and the model's frames for [start, *symbols, end] ->
    (phone, start frame, end frame, phoneme-word number) with pauses as word -1; frames tile the chunk."""
    if len(frames) != len(symbols) + 2:
        raise ValueError(f"{len(frames)} durations for {len(symbols)} symbols (+ start and end)")
    out: list[tuple[str, int, int, int]] = []
    t = int(frames[0])
    if t:
        out.append((PAUSE, 0, t, -1))
    word, word_has_phones, carry, i = 0, False, 0, 0
    while i < len(symbols):
        symbol, d = symbols[i], int(frames[i + 1])
        if symbol in _STRESS:
            carry += d
            i += 1
            continue
        pair = symbols[i:i + 2]
        if pair in _DIGRAPHS:
            parts, d, i = _DIGRAPHS[pair], d + int(frames[i + 2]), i + 2
            if symbols[i:i + 1] == "ɹ":  # a linking r after r-colouring ("teacher in" -> əɹɹ): one er
                d, i = d + int(frames[i + 1]), i + 1
        elif symbol == _SPACE or not (symbol.isalpha() or symbol in _KOKORO_LETTERS):
            if word_has_phones:
                word, word_has_phones = word + 1, False
            if symbol == _SPACE and out and out[-1][0] != PAUSE:
                back = (d + 1) // 2  # the word before keeps half, the next phone gets the rest
                phone, start, end, w = out[-1]
                out[-1] = (phone, start, end + back, w)
                t, carry = t + back, carry + d - back
            else:  # punctuation (and a space next to it): a pause, with any frames carried so far
                _add_pause(out, t, t + carry + d)
                t, carry = t + carry + d, 0
            i += 1
            continue
        else:
            parts, i = _symbol_phones(symbol), i + 1
        d += carry
        carry = 0
        step = d / len(parts)
        for k, phone in enumerate(parts):
            start, end = t + round(k * step), t + round((k + 1) * step)
            if end > start:
                out.append((phone, start, end, -1 if phone == PAUSE else word))
        word_has_phones = True
        t += d
    end = t + carry + int(frames[-1])
    if end > t:
        _add_pause(out, t, end)
    return out


def _add_pause(out: list[tuple[str, int, int, int]], start: int, end: int) -> None:
    if out and out[-1][0] == PAUSE:
        out[-1] = (PAUSE, out[-1][1], end, -1)
    else:
        out.append((PAUSE, start, end, -1))


def kokoro_alignment(text: str, chunks: Sequence[tuple[str, Sequence[int]]]) -> Alignment:
    """The exact alignment of a Kokoro clip: `text` is what it read (normalised), `chunks` the symbols of
    each model call with that call's durations, in order. Times are seconds from the clip's first sample.
    Phoneme words map onto the transcript's words one to one when their counts agree; otherwise (espeak-ng
    joined or split a word) in order, proportionally, and `extra["word_map"]` says so."""
    phones: list[tuple[str, int, int, int]] = []
    offset, words_before = 0, 0
    for symbols, frames in chunks:
        part = chunk_phones(symbols, frames)
        phones += [(p, s + offset, e + offset, w + words_before if w >= 0 else -1) for p, s, e, w in part]
        offset += int(np.sum(frames))
        words_before += 1 + max((w for *_, w in part if w >= 0), default=-1)  # this chunk's words
    words = [w for w, _, _ in transcript_words(text)]
    extra = {}
    if words_before != len(words) and words_before and words:
        extra["word_map"] = f"proportional ({words_before} phoneme words, {len(words)} transcript words)"

    def word_of(k: int) -> int:
        if k < 0 or not words:
            return -1
        return k if not extra else min(len(words) - 1, k * len(words) // words_before)

    frame = FRAME_SAMPLES / 24000
    duration = offset * frame

    def at(f: int) -> float:
        return min(max(f * frame - LEAD_SECONDS, 0.0), duration)

    spans = [PhoneSpan(p, at(s), at(e), word_of(w)) for p, s, e, w in phones]
    spans = [p for p in spans if p.end > p.start]
    word_spans = []
    for i, word in enumerate(words):
        mine = [p for p in spans if p.word_index == i]
        at = word_spans[-1].end if word_spans else 0.0
        word_spans.append(WordSpan(word, mine[0].start, mine[-1].end) if mine else WordSpan(word, at, at))
    return Alignment(word_spans, fill_pauses(spans, duration), duration, frame_rate=0.0, aligner=ALIGNER,
                     extra=extra)
