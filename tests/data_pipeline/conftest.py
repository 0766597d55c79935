"""Shared fixtures: real token shards (webdataset tars) written with the tokenizer's own writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.records import TokenMeta
from data_pipeline.tokens.token_shards import token_sample, write_shard_atomically

FRAME_RATE = 75.0
NUM_CODEBOOKS = 4
CODEBOOK_SIZE = 1024


def byte_text_encoder(text: str) -> list[int]:
    """A TextTokenizer-like callable: one id per UTF-8 byte."""
    return list(text.encode("utf-8"))


def make_token_sample(key: str, speaker: str, num_frames: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, CODEBOOK_SIZE, (NUM_CODEBOOKS, num_frames)).astype(np.int16)
    meta = TokenMeta(text=f"utterance {key}", speaker=speaker, duration=num_frames / FRAME_RATE,
                     sample_rate=24000, source=f"/corpus/{key}.wav", codec="test", frame_rate=FRAME_RATE,
                     num_frames=num_frames, num_codebooks=NUM_CODEBOOKS,
                     extra={"codebook_size": CODEBOOK_SIZE})
    return token_sample(key, codes, meta)


ShardWriter = Callable[..., list[Path]]


@pytest.fixture
def text_encoder() -> Callable[[str], list[int]]:
    return byte_text_encoder


@pytest.fixture
def sample_factory() -> Callable[[str, str, int, int], dict]:
    """`sample_factory(key, speaker, num_frames, seed)` -> the tar members of one token sample."""
    return make_token_sample


@pytest.fixture
def token_shards(tmp_path: Path) -> ShardWriter:
    """Factory: write `num_shards` token shards of `per_shard` utterances each; speakers change every
    `per_speaker` utterances (kept together, as ingest writes them); lengths drawn from `lengths`
    (frames) or uniform in [75, 600]. Keys are `s{shard}-u{index}`."""

    def write(num_shards: int = 4, per_shard: int = 12, per_speaker: int = 4, seed: int = 0,
              lengths: list[int] | None = None, subdir: str = "tokens") -> list[Path]:
        out = tmp_path / subdir
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        paths, n = [], 0
        for s in range(num_shards):
            samples = []
            for _ in range(per_shard):
                frames = lengths[n % len(lengths)] if lengths else int(rng.integers(75, 601))
                key, speaker = f"s{s:03d}-u{n:05d}", f"spk{n // per_speaker}"
                samples.append(make_token_sample(key, speaker, frames, seed + n))
                n += 1
            path = out / f"tokens-{s:06d}.tar"
            write_shard_atomically(path, samples)
            paths.append(path)
        return paths

    return write


@pytest.fixture(scope="module")
def tiny_codec_dir(tmp_path_factory) -> Path:
    """A tiny EnCodec-family codec (16 kHz, 125 frames a second) saved as a codec checkpoint directory: the
    same class and loading path as the full model."""
    from codec.backends.encodec_codec import EncodecCodec, EncodecConfig

    config = EncodecConfig(name="tiny", sample_rate=16_000, causal=True, n_filters=4, ratios=[4, 4, 4, 2],
                           dimension=16, lstm_layers=0, codebook_size=64, max_codebooks=4, num_codebooks=4,
                           target_bandwidths=[])
    return EncodecCodec.random(config, seed=0).save_pretrained(tmp_path_factory.mktemp("codec") / "tiny")
