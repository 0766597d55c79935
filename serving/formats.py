"""Audio response formats: whole files (wav, flac, pcm) and streams (wav, pcm).

All of them carry mono 16-bit PCM at the codec's sample rate. A streamed WAV header cannot know the length, so
it says 0xFFFFFFFF (the usual convention for WAV over a pipe; soundfile, ffmpeg and browsers read to the end).
FLAC is not streamed: its header holds the total length and a checksum, and a stream whose header says
"unknown" is one that soundfile refuses to read.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

FORMATS = ("wav", "flac", "pcm")
STREAMABLE = ("wav", "pcm")
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}
UNKNOWN_SIZE = 0xFFFFFFFF


def pcm16(wav: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> little-endian signed 16-bit bytes."""
    return (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_stream_header(sample_rate: int) -> bytes:
    """A 44-byte PCM16 mono WAV header with unknown (maximal) sizes, for a stream of `pcm16` bytes."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack(
        "<I", UNKNOWN_SIZE)


def encode_file(wav: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole utterance -> the bytes of one `fmt` file."""
    samples = pcm16(wav)
    if fmt == "pcm":
        return samples
    buffer = io.BytesIO()  # the same 16-bit samples in every format (libsndfile scales floats its own way)
    sf.write(buffer, np.frombuffer(samples, dtype="<i2"), sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()
