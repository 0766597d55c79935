"""What goes into and comes out of the `Synthesizer` (lm/inference/synthesizer.py): the decode options
(`DecodeConfig`, turned into the generation's `SamplingConfig`), a request, a result, an encoded voice, and
the AR batch row one sentence piece becomes.

Shape letters: C channels, T samples, Q codebooks, L text pieces, P phones, Fp prompt frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from lm.inference.house_voices import HouseVoice
from lm.inference.sampling import SamplingConfig

MIN_SPEED, MAX_SPEED = 0.25, 4.0
MAX_CANDIDATES = 16
# best of N judges (DecodeConfig.judge)
JUDGES = ("phones", "phones+words")


def speed_options(speed: float | None) -> dict[str, Any]:
    """The decode options a speaking rate asks for: none at 1 (the model's own pace); otherwise the rate and
    lengths given before decoding (phone_durations="engine": flite's, at the voice's pace / speed)."""
    return {} if speed is None or speed == 1.0 else {"speed": speed, "phone_durations": "engine"}


class SynthesisError(ValueError):
    """Bad input (missing export, unusable prompt, empty text): the message says what and where."""


@dataclass
class DecodeConfig:
    """Synthesis knobs; every field can be given as a keyword to `synthesize` / `synthesize_batch`.

    `max_seconds` caps the audio generated for each sentence piece (the text-length guard of
    `lm.inference.sampling.SamplingConfig` usually stops a runaway row much earlier).
    """

    temperature: float = 1.0  # <= 0: greedy
    top_k: int = 50  # <= 0: off
    top_p: float = 1.0  # >= 1: off
    repetition_penalty: float = 1.0  # 1: off; penalises codes seen in the last `repetition_window` frames
    max_seconds: float = 20.0
    max_chars: int = 200  # sentence pieces longer than this are cut at clauses / spaces
    pause_seconds: float = 0.2  # silence between sentence pieces
    # speaker-prompt mode keeps the last seconds of a longer prompt; exports of a training run set this to
    # the longest prompt the model was trained with (config.json metadata.decode)
    max_prompt_seconds: float = 15.0
    # the prompt is scaled to this active speech level (dB, codec/loudness.py) before the codec encodes it:
    # the codec's first codebook carries the level, so a prompt far quieter than the training speech reads
    # as an unfamiliar voice. None: as given. Exports store the training corpus's level (metadata.decode).
    prompt_level_db: float | None = None
    decode_context_seconds: float = 1.0  # continuation mode: prompt audio decoded before the target, then cut
    batch_size: int = 8  # rows (sentence pieces) per AR batch in synthesize_batch
    # length limits per text piece (sentencepiece token), in seconds so they hold for any codec frame rate.
    # Speech runs at ~0.1-0.3 s per piece: the guard stops a row that never says <eos>, the floor stops the
    # "<eos> at step 0" failure of undertrained models (set it to 0 to allow any length).
    max_seconds_per_token: float = 0.5
    guard_slack_seconds: float = 1.0
    min_seconds_per_token: float = 0.02
    # passed through to lm.inference.sampling.SamplingConfig
    repetition_window: int = 16
    nar_temperature: float = 0.0
    # phone-aligned models: "sample" or "median" draw each phone's length from the advance head (see
    # SamplingConfig); "engine" holds each for flite's duration at the prompt's pace (phone_alignment.py)
    phone_durations: str = "sample"
    # phone-aligned models: guidance scale on the phones (lm/inference/guidance.py); 1: off
    phone_guidance: float = 1.0
    # phone-aligned models with phone_durations="engine": speaking rate, 0.25-4 (OpenAI's range); 2 halves
    # every phone's length. The advance head knows where a phone ends, so it cannot be hurried (a hazard
    # raised to a power moved its lengths by 7 % for speed 1.5): speed works on given lengths only.
    speed: float = 1.0
    # whose voice the AR draws codebook 1 in: "prompt" (the prompt's own codes); "house" (models with a house
    # voice bank, lm/inference/house_voices.py: the training voice nearest the prompt, the NAR adding the
    # prompt's voice; reads far better for voices unlike the training ones); or a house voice's name.
    # models/default stores "house" (metadata.decode; scripts/make_house_voices.py --default).
    ar_voice: str = "prompt"
    # best of N (lm/inference/rerank.py): draw this many readings of every sentence piece and keep one near
    # the prompt speaker's pace that hama's phone recogniser hears closest to its phones. N readings cost
    # ~N times the decoding (batched).
    # Streaming sends frames as they are made and so reads one. models/default stores 4 (metadata.decode).
    candidates: int = 1
    # best of N in continuation mode: only readings within +-this share of the prompt speaker's pace compete
    # (the closest one when none is); 0: pace is not considered
    pace_tolerance: float = 0.25
    # best of N: who judges the readings. "phones": hama's phone recogniser; "phones+words": its phone error
    # plus Whisper base's word error (lm/inference/word_judge.py; falls back to "phones", with a warning,
    # where Whisper base is not installed)
    judge: str = "phones"

    def updated(self, overrides: Mapping[str, Any]) -> DecodeConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown decode option(s) {unknown}; known: {sorted(known)}")
        cfg = replace(self, **overrides)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not 0 <= self.top_p <= 1 or self.top_p == 0:
            raise SynthesisError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise SynthesisError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_seconds <= 0 or self.max_seconds_per_token <= 0:
            raise SynthesisError(f"max_seconds and max_seconds_per_token must be > 0, got "
                                 f"{self.max_seconds}, {self.max_seconds_per_token}")
        if self.min_seconds_per_token < 0 or self.guard_slack_seconds < 0:
            raise SynthesisError("min_seconds_per_token and guard_slack_seconds must be >= 0")
        if self.max_chars < 1 or self.batch_size < 1:
            raise SynthesisError(f"max_chars and batch_size must be >= 1, got {self.max_chars}, "
                                 f"{self.batch_size}")
        if self.phone_durations not in ("sample", "median", "engine"):
            raise SynthesisError(f"phone_durations must be 'sample', 'median' or 'engine', "
                                 f"got {self.phone_durations!r}")
        if not self.phone_guidance > 0:
            raise SynthesisError(f"phone_guidance must be > 0 (1: off), got {self.phone_guidance}")
        if not MIN_SPEED <= self.speed <= MAX_SPEED:
            raise SynthesisError(f"speed must be in [{MIN_SPEED}, {MAX_SPEED}], got {self.speed}")
        if self.speed != 1.0 and self.phone_durations != "engine":
            raise SynthesisError(f"speed {self.speed} needs phone_durations='engine' (lengths given before "
                                 f"decoding); got phone_durations={self.phone_durations!r}")
        if self.prompt_level_db is not None and not -60 <= self.prompt_level_db <= 0:
            raise SynthesisError(f"prompt_level_db must be in [-60, 0] dB (None: as given), got "
                                 f"{self.prompt_level_db}")
        if not isinstance(self.ar_voice, str) or not self.ar_voice.strip():
            raise SynthesisError(f"ar_voice must be 'prompt', 'house' or a house voice's name, got "
                                 f"{self.ar_voice!r}")
        if not isinstance(self.candidates, int) or not 1 <= self.candidates <= MAX_CANDIDATES:
            raise SynthesisError(f"candidates must be a whole number in [1, {MAX_CANDIDATES}], got "
                                 f"{self.candidates!r}")
        if self.judge not in JUDGES:
            raise SynthesisError(f"judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if not 0 <= self.pace_tolerance < 1:
            raise SynthesisError(f"pace_tolerance must be in [0, 1) (0: off), got {self.pace_tolerance}")
        if min(self.pause_seconds, self.decode_context_seconds) < 0 or self.max_prompt_seconds <= 0:
            raise SynthesisError("pause_seconds and decode_context_seconds must be >= 0, "
                                 "max_prompt_seconds > 0")

    def sampling(self, frame_rate: float, max_new_frames: int, max_text_len: int) -> SamplingConfig:
        """The generation settings at `frame_rate`, at most `max_new_frames` frames a row, for rows of at most
        `max_text_len` text tokens."""
        def frames(seconds: float) -> float:  # round away float fuzz: 0.04 s * 75 Hz must be 3, not 3.0000001
            return round(seconds * frame_rate, 6)

        cap = min(max_new_frames, max(1, math.ceil(frames(self.max_seconds))))
        # the length floor must never push a row past the hard cap (max_seconds / the model's positions)
        min_per_token = min(frames(self.min_seconds_per_token), cap / max(max_text_len, 1))
        return SamplingConfig(
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            repetition_penalty=self.repetition_penalty, repetition_window=self.repetition_window,
            max_new_frames=cap, max_frames_per_text_token=frames(self.max_seconds_per_token),
            guard_slack_frames=math.ceil(frames(self.guard_slack_seconds)), min_new_frames=1,
            min_frames_per_text_token=min_per_token,
            nar_temperature=self.nar_temperature,
            phone_durations="sample" if self.phone_durations == "engine" else self.phone_durations,
            phone_guidance=self.phone_guidance)


@dataclass
class SynthesisRequest:
    """One utterance for `synthesize_batch` (a plain dict with these keys works too)."""

    text: str
    prompt_wav: np.ndarray | torch.Tensor  # [C, T] or [T]
    prompt_sample_rate: int
    prompt_text: str | None = None
    seed: int | None = None
    decode: dict[str, Any] = field(default_factory=dict)


def _as_request(r: SynthesisRequest | Mapping[str, Any]) -> SynthesisRequest:
    if isinstance(r, SynthesisRequest):
        return r
    base = {f.name for f in fields(SynthesisRequest)} - {"decode"}
    data = dict(r)
    try:
        return SynthesisRequest(**{k: data.pop(k) for k in list(data) if k in base},
                                decode={**data.pop("decode", {}), **data})
    except TypeError as e:
        raise SynthesisError(f"bad synthesis request {sorted(r)}: {e}") from e


@dataclass
class SynthesisResult:
    """wav [T] float32 in [-1, 1] at `sample_rate`.

    rtf: wall time / audio time (for a batch: the batch's wall time / all of its audio, the throughput).
    first_audio_seconds: wall time from the call until this request's first sentence piece was decoded.
    """

    wav: np.ndarray
    sample_rate: int
    rtf: float
    first_audio_seconds: float
    elapsed_seconds: float = 0.0
    seed: int = 0
    mode: str = "speaker-prompt"
    pieces: list[str] = field(default_factory=list)
    piece_frames: list[int] = field(default_factory=list)
    hit_length_guard: list[bool] = field(default_factory=list)  # a piece stopped by the guard, not by <eos>
    house_voice: str | None = None  # the house voice the AR read (ar_voice), None: the prompt
    candidates: int = 1  # readings drawn per piece (DecodeConfig.candidates)
    # with candidates > 1: the kept reading's phone error rate per piece (lm/inference/rerank.py)
    piece_phone_errors: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate

    def summary(self) -> str:
        guard = sum(self.hit_length_guard)
        lines = [
            f"audio        {self.seconds:.2f} s at {self.sample_rate} Hz ({len(self.pieces)} piece(s), "
            f"{sum(self.piece_frames)} frames)",
            f"mode         {self.mode}, seed {self.seed}",
            f"AR voice     {self.house_voice or 'the prompt'}"
            + (" (house voice; the NAR adds the prompt's voice)" if self.house_voice else ""),
            *([f"{'best of ' + str(self.candidates):<13}phone error rate of the kept readings "
               + ", ".join(f"{e:.2f}" for e in self.piece_phone_errors)] if self.candidates > 1 else []),
            f"time         {self.elapsed_seconds:.2f} s, first audio after {self.first_audio_seconds:.2f} s",
            f"RTF          {self.rtf:.3f} ({'faster' if self.rtf < 1 else 'slower'} than real time)",
        ]
        if guard:
            lines.append(f"warning      {guard} piece(s) hit the length guard without <eos> (cut short)")
        return "\n".join(lines)


@dataclass
class Voice:
    """A voice prompt encoded once, reusable for any number of requests (`Synthesizer.encode_voice`).

    codes [Q, Fp]; prompt_text: the prompt's transcript (continuation mode) or None (speaker-prompt mode);
    prompt_phones [Fp]: the phone of every prompt frame (phone-aligned models in continuation mode only).
    house_voice: filled in by the Synthesizer the first time the voice is used with ar_voice="house".
    """

    codes: torch.Tensor
    prompt_text: str | None = None
    prompt_phones: torch.Tensor | None = None
    house_voice: str | None = None  # the house voice nearest this voice, once asked for (ar_voice="house")


@dataclass
class _Row:
    """One sentence piece of one request: what one AR batch row generates."""

    request: int
    piece: int
    text_ids: torch.Tensor  # [L]
    prompt_codes: torch.Tensor  # [Q, Fp]
    prompt_text_ids: torch.Tensor | None
    decode: DecodeConfig
    phone_ids: torch.Tensor | None = None  # [P] target phones (phone-aligned models)
    prompt_phones: torch.Tensor | None = None  # [Fp] phone of each prompt frame (continuation mode)
    phone_durations: torch.Tensor | None = None  # [P] frames per target phone; None: the advance head decides
    house: HouseVoice | None = None  # the AR's voice prompt (ar_voice); None: prompt_codes
    candidate: int = 0  # which of the piece's decode.candidates readings this row draws
    text: str = ""  # the piece's text
    target_pace: float | None = None  # the prompt speaker's seconds per phone (best of N; None: unknown)


class Reading(NamedTuple):
    """One drawn reading of a sentence piece (best of N draws several)."""

    wav: np.ndarray | None  # None: ruled out by its pace alone, never decoded (row_batches.readings_to_hear)
    frames: int
    hit_length_guard: bool
    pace: float | None  # seconds per phone (phone-aligned rows drawn as one of several candidates)
    codes: torch.Tensor | None  # [Q, frames]; None when never decoded
