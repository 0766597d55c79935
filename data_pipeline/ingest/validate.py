"""Validation at the door: one discovered item -> its audio as FLAC + `RawMeta`, or a reject reason.

Audio keeps its channels and sample rate and is stored losslessly: 8/16-bit sources as 16-bit FLAC, 24-bit
ones as 24-bit FLAC; float / 32-bit / lossy sources are quantised to 24 bits (FLAC has no float). An item
that cannot be used is rejected with one of ``REJECT_REASONS``; ``process_item`` runs in the ingest workers
and never raises.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from data_pipeline.alignment.schema import Alignment, sidecar_path
from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.sources import SourceItem
from data_pipeline.ingest.transcripts import TranscriptError, read_transcript_file
from data_pipeline.records import RawMeta

REJECT_REASONS = {
    "missing_audio": "the audio file does not exist",
    "empty_file": "the audio file has 0 bytes",
    "unreadable": "libsndfile cannot decode the file",
    "empty_audio": "the file decodes to no samples",
    "non_finite": "NaN or infinite samples",
    "too_short": "shorter than min_seconds",
    "too_long": "longer than max_seconds",
    "silent": "RMS (DC removed) below silence_dbfs",
    "clipped": "more than max_clip_fraction of the samples at full scale",
    "missing_transcript": "no transcript for the audio",
    "empty_transcript": "transcript empty or without any letter or digit",
    "bad_transcript_encoding": "transcript is not valid UTF-8",
    "bad_manifest_row": "a manifest row that cannot be parsed",
    "duplicate": "the same audio file listed twice",
    "encode_failed": "FLAC cannot store it (e.g. more than 8 channels)",
    "worker_crashed": "the decoding process died on this file (e.g. a decoder crash or out of memory)",
    "bad_alignment": "the clip's .align.json sidecar cannot be read or does not match the audio",
    "internal_error": "an unexpected error while processing the item (a bug: please report)",
}

# libsndfile subtypes whose samples fit exactly in 16 / 24 bits; everything else goes through float.
_INT16_SUBTYPES = frozenset(
    "PCM_S8 PCM_U8 PCM_16 ULAW ALAW ALAC_16 DWVW_12 DWVW_16 DPCM_8 DPCM_16 IMA_ADPCM MS_ADPCM GSM610 "
    "VOX_ADPCM G721_32 G723_24 G723_40 NMS_ADPCM_16 NMS_ADPCM_24 NMS_ADPCM_32".split()
)
_INT24_SUBTYPES = frozenset("PCM_24 ALAC_20 ALAC_24 DWVW_24".split())


@dataclass
class ItemResult:
    key: str
    source: str
    flac: bytes | None = None
    meta: RawMeta | None = None
    align: bytes | None = None  # the clip's .align.json sidecar (exact synthesiser timings), if it has one
    reason: str | None = None
    detail: str = ""


# ----------------------------------------------------------------------------------------------- audio


class Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_audio(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int, str]:
    """Decode a file for lossless storage: (samples [T, C], sample_rate, FLAC subtype).

    Samples are int16 for 8/16-bit sources (PCM_16), int32 holding 24 significant bits for 24-bit sources and
    float64 for the rest (PCM_24 after quantising). Raises Reject.
    """
    if not path.exists():
        raise Reject("missing_audio", f"{path} does not exist")
    if path.stat().st_size == 0:
        raise Reject("empty_file", f"{path} has 0 bytes")
    try:
        with sf.SoundFile(path) as f:
            sr, frames = f.samplerate, f.frames
            if max_seconds is not None and frames / sr > max_seconds:  # don't decode an hour-long file
                raise Reject("too_long", f"{frames / sr:.2f} s > {max_seconds} s")
            if f.subtype in _INT16_SUBTYPES:
                return f.read(dtype="int16", always_2d=True), sr, "PCM_16"
            if f.subtype in _INT24_SUBTYPES:
                return f.read(dtype="int32", always_2d=True), sr, "PCM_24"
            return f.read(dtype="float64", always_2d=True), sr, "PCM_24"
    except Reject:
        raise
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError / others on corrupt data
        raise Reject("unreadable", f"{path}: {type(e).__name__}: {e}") from e


def to_float(samples: np.ndarray) -> np.ndarray:
    """Full scale = 1.0, float32 (int16 / left-justified int32 / float input)."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return samples.astype(np.float32) / 2147483648.0
    return samples.astype(np.float32)


def check_audio(samples: np.ndarray, sample_rate: int, cfg: IngestConfig) -> None:
    """Raise Reject if the decoded audio [T, C] is not usable for training."""
    frames = samples.shape[0]
    if frames == 0 or samples.shape[1] == 0:
        raise Reject("empty_audio", "no samples")
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise Reject("non_finite", f"{bad} NaN/inf samples of {samples.size}")
    duration = frames / sample_rate
    if duration < cfg.min_seconds:
        raise Reject("too_short", f"{duration:.3f} s < {cfg.min_seconds} s")
    if duration > cfg.max_seconds:
        raise Reject("too_long", f"{duration:.2f} s > {cfg.max_seconds} s")
    x = to_float(samples)
    # DC removed so that a constant offset (a dead microphone) counts as silence too.
    rms = float(np.sqrt(np.mean(np.square(x - x.mean(axis=0, keepdims=True), dtype=np.float64))))
    dbfs = 20.0 * math.log10(rms) if rms > 0 else -math.inf
    if dbfs < cfg.silence_dbfs:
        raise Reject("silent", f"RMS {dbfs:.1f} dBFS < {cfg.silence_dbfs} dBFS")
    clipped = float(np.mean(np.abs(x) >= cfg.clip_level))
    if clipped > cfg.max_clip_fraction:
        raise Reject("clipped", f"{clipped:.1%} of samples at full scale (limit {cfg.max_clip_fraction:.1%})")


def encode_flac(samples: np.ndarray, sample_rate: int, subtype: str) -> bytes:
    """Encode [T, C] samples as FLAC bytes; float input is quantised to 24 bits (rounded, clipped)."""
    if samples.dtype.kind == "f":
        # Quantise ourselves: libsndfile wraps around on out-of-range floats unless clipping is switched on.
        q = np.clip(np.round(samples * 2.0**23), -(2**23), 2**23 - 1).astype(np.int32)
        samples = np.left_shift(q, 8)
    buf = io.BytesIO()
    try:
        sf.write(buf, samples, sample_rate, format="FLAC", subtype=subtype)
    except Exception as e:
        raise Reject("encode_failed", f"{type(e).__name__}: {e}") from e
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- items


def read_sidecar(audio: Path, seconds: float, tolerance: float = 0.05) -> bytes | None:
    """The clip's `.align.json` sidecar (written by the synthetic corpus builders), checked against the
    audio; None when there is none. Raises Reject("bad_alignment") for one that is unreadable or whose
    duration differs from the audio's by more than `tolerance` seconds."""
    path = sidecar_path(audio)
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        alignment = Alignment.from_json(json.loads(data))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Reject("bad_alignment", f"{path}: {type(e).__name__}: {e}") from e
    if abs(alignment.duration - seconds) > tolerance or not alignment.phones:
        raise Reject("bad_alignment", f"{path}: covers {alignment.duration:.3f} s of a {seconds:.3f} s clip"
                     if alignment.phones else f"{path}: no phones")
    return data


def process_item(keyed: tuple[str, SourceItem], cfg: IngestConfig) -> ItemResult:
    """Validate one item and encode its audio; runs in a worker process. Never raises."""
    key, item = keyed
    result = ItemResult(key=key, source=item.source)
    try:
        if item.reject is not None:
            raise Reject(*item.reject)
        text = item.text
        if item.text_file is not None:
            try:
                text = read_transcript_file(item.text_file)
            except TranscriptError as e:
                raise Reject(e.reason, e.detail) from e
        if not text:
            raise Reject("missing_transcript", f"no transcript for {item.audio}")
        samples, sr, subtype = read_audio(item.audio, cfg.max_seconds)
        check_audio(samples, sr, cfg)
        result.flac = encode_flac(samples, sr, subtype)
        result.align = read_sidecar(item.audio, samples.shape[0] / sr)
        result.meta = RawMeta(
            text=text,
            speaker=item.speaker,
            duration=round(samples.shape[0] / sr, 6),
            sample_rate=int(sr),
            source=item.source,
        )
    except Reject as e:
        result.reason, result.detail = e.reason, e.detail
    except Exception as e:  # a bug must not end a long run: record it with the item
        result.reason, result.detail = "internal_error", f"{type(e).__name__}: {e}"
    return result

