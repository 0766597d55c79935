"""One raw shard -> its token samples, with one codec: `ShardTokenizer`.

Inside a shard, clips are decoded, down-mixed and resampled to the codec rate, then encoded in
length-sorted padded batches bounded by total padded samples: one codec forward per batch instead of one
per file. Codes are written in the original order. A clip that cannot be decoded, encoded or aligned
becomes a `Reject` in the shard's `ShardSummary`; the shard goes on.

Shape letters: B batch, C channels, T samples, Q codebooks, F frames.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from codec.audio import load_audio, pad_batch, resample, to_mono
from codec.base import Codec
from codec.identity import codec_identity
from data_pipeline.alignment.schema import Alignment
from data_pipeline.records import ALIGN_EXT, AUDIO_EXT, META_EXT, RawMeta, TokenMeta
from data_pipeline.tokens.config import TokenizeConfig
from data_pipeline.tokens.token_shards import alignment_member, codes_dtype, token_sample, token_shard_name

log = logging.getLogger(__name__)

_RAW_FIELDS = {"text", "speaker", "duration", "sample_rate", "source"}


@dataclass
class Reject:
    shard: str
    key: str
    reason: str
    detail: str = ""


@dataclass
class ShardSummary:
    input: str
    output: str
    clips: int = 0  # samples found in the input shard
    written: int = 0
    rejected: int = 0
    audio_seconds: float = 0.0
    frames: int = 0
    forwards: int = 0  # codec calls
    padding: float = 0.0  # share of padded samples in those calls
    decode_seconds: float = 0.0  # reading, FLAC decoding, resampling
    encode_seconds: float = 0.0  # codec forwards (including the copy of the codes back to the host)
    align_seconds: float = 0.0  # the forced aligner (clips without synthesiser timings)
    aligned: int = 0  # written clips that carry an alignment (exact or aligned)
    seconds: float = 0.0  # wall time for the shard
    rejects: list[dict] = field(default_factory=list)


@dataclass
class _Clip:
    index: int
    key: str
    meta: dict
    wav: torch.Tensor | None = None  # [T] mono at the codec rate
    codes: np.ndarray | None = None  # [Q, F]
    exact: Alignment | None = None  # synthesiser timings from the raw shard
    alignment: Alignment | None = None  # what goes into the token shard


def read_raw_shard(url: str, rejects: list[Reject]) -> Iterator[tuple[str, dict]]:
    """(key, members) of a raw shard in stored order; a broken tar is recorded as a reject."""
    name = Path(url).name

    def on_error(exc: Exception) -> bool:
        rejects.append(Reject(name, "", "shard_read_error", str(exc)[:500]))
        log.warning("error reading raw shard %s: %s", url, exc)
        return True

    stream = gopen(url, "rb")
    try:
        for sample in group_by_keys(tar_file_expander([{"url": url, "stream": stream}], handler=on_error),
                                    handler=on_error):
            yield sample["__key__"], sample
    finally:
        stream.close()


class ShardTokenizer:
    """Encodes raw shards with one codec; `batch_seconds` bounds each padded forward."""

    def __init__(self, codec: Codec, codec_spec: str, cfg: TokenizeConfig):
        self.codec, self.spec, self.cfg = codec, codec_spec, cfg
        self.identity = codec_identity(codec_spec)  # what the tokens are compatible with (codec/identity.py)
        self.dtype = codes_dtype(codec.codebook_size)
        self._aligner = None  # loaded on the first clip without synthesiser timings (align="auto")

    # ---- decode ----------------------------------------------------------------------------------
    def _decode(self, clip: _Clip, members: dict) -> None:
        """Fill clip.meta / clip.wav from the raw members; raises ValueError / AudioReadError."""
        if META_EXT not in members or AUDIO_EXT not in members:
            raise ValueError(f"missing .{META_EXT} or .{AUDIO_EXT}")
        meta = json.loads(members[META_EXT])
        missing = _RAW_FIELDS - set(meta)
        if missing:
            raise ValueError(f"metadata lacks {sorted(missing)}")
        wav, sr = load_audio(members[AUDIO_EXT], name=clip.key)
        if wav.shape[-1] == 0:
            raise ValueError("no samples")
        if ALIGN_EXT in members and self.cfg.align != "off":
            try:
                clip.exact = Alignment.from_json(json.loads(members[ALIGN_EXT]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"unreadable .{ALIGN_EXT}: {type(e).__name__}: {e}") from e
        clip.meta = meta
        clip.wav = resample(to_mono(wav), sr, self.codec.sample_rate)[0]

    # ---- encode ----------------------------------------------------------------------------------
    def batch_samples(self) -> float:
        """The padded-samples budget of one codec forward at the codec rate."""
        if self.cfg.batch_frames is not None:
            return self.cfg.batch_frames * self.codec.hop_length
        seconds = self.cfg.batch_seconds
        if seconds is None:
            seconds = 8.0 if self.codec.device.type == "cpu" else 200.0
        return seconds * self.codec.sample_rate

    def _batches(self, clips: list[_Clip]) -> Iterator[list[_Clip]]:
        """Longest first; a batch grows while B * T_max stays within the budget and no clip in it is
        padded by more than `max_padding` of the longest."""
        budget = self.batch_samples()
        long_limit = self.cfg.long_clip_seconds * self.codec.sample_rate
        batch: list[_Clip] = []
        for clip in sorted(clips, key=lambda c: -c.wav.shape[-1]):
            if clip.wav.shape[-1] > long_limit:
                yield [clip]
                continue
            longest = batch[0].wav.shape[-1] if batch else 0
            if batch and ((len(batch) + 1) * longest > budget
                          or clip.wav.shape[-1] < (1 - self.cfg.max_padding) * longest):
                yield batch
                batch = []
            batch.append(clip)
        if batch:
            yield batch

    def _encode(self, batch: list[_Clip], summary: ShardSummary) -> None:
        codec = self.codec
        if len(batch) == 1 and batch[0].wav.shape[-1] > self.cfg.long_clip_seconds * codec.sample_rate:
            codes = codec.encode_long(batch[0].wav.to(codec.device)[None], codec.sample_rate)
            batch[0].codes = codes.cpu().numpy().astype(self.dtype)
            summary.forwards += 1
            return
        wav, lengths = pad_batch([c.wav for c in batch])
        out = codec.encode(wav.to(codec.device), lengths.to(codec.device), sample_rate=codec.sample_rate)
        codes = out.codes.cpu().numpy()
        for clip, frames, row in zip(batch, out.frame_lengths.tolist(), codes, strict=True):
            clip.codes = row[:, :frames].astype(self.dtype)
        summary.forwards += 1
        summary.padding += float(wav.shape[-1] * len(batch) - lengths.sum())  # samples; normalised later

    def _encode_window(self, clips: list[_Clip], summary: ShardSummary, rejects: list[Reject]) -> None:
        start, aligning = time.perf_counter(), summary.align_seconds
        self._encode_batches(clips, summary, rejects)
        summary.encode_seconds += time.perf_counter() - start - (summary.align_seconds - aligning)

    def _encode_batches(self, clips: list[_Clip], summary: ShardSummary, rejects: list[Reject]) -> None:
        for batch in self._batches(clips):
            try:
                self._encode(batch, summary)
            except Exception as exc:  # noqa: BLE001 - retry one by one, so one bad clip costs only itself
                if len(batch) == 1:
                    rejects.append(Reject(summary.input, batch[0].key, "encode_failed", repr(exc)[:500]))
                    log.warning("cannot encode %s in %s: %r", batch[0].key, summary.input, exc)
                    continue
                for clip in batch:
                    self._encode_batches([clip], summary, rejects)
            for clip in batch:
                if clip.codes is not None:
                    self._align(clip, summary, rejects)
                clip.wav = None  # free the audio as soon as it is encoded and aligned

    # ---- align -----------------------------------------------------------------------------------
    def _align(self, clip: _Clip, summary: ShardSummary, rejects: list[Reject]) -> None:
        """Exact synthesiser timings win; otherwise ("auto") the forced aligner, whose failures reject."""
        if clip.exact is not None:
            clip.alignment = clip.exact
            return
        if self.cfg.align != "auto":
            return
        from data_pipeline.alignment.aligner import DEFAULT_ALIGNER, Aligner, AlignmentError

        if self._aligner is None:
            self._aligner = Aligner.load(self.cfg.aligner or DEFAULT_ALIGNER)
        start = time.perf_counter()
        try:
            clip.alignment = self._aligner.align(clip.wav, self.codec.sample_rate, clip.meta["text"])
        except AlignmentError as e:
            rejects.append(Reject(summary.input, clip.key, f"align_{e.reason}", str(e)[:500]))
            log.warning("cannot align %s in %s: %s", clip.key, summary.input, e)
            clip.codes = None
        summary.align_seconds += time.perf_counter() - start

    # ---- one shard -------------------------------------------------------------------------------
    def tokenize_shard(self, url: str) -> tuple[ShardSummary, list[dict]]:
        """Encode one raw shard -> (summary, token samples in the input order)."""
        start = time.perf_counter()
        name = Path(url).name
        summary = ShardSummary(input=name, output=token_shard_name(name))
        rejects: list[Reject] = []
        clips: list[_Clip] = []
        window: list[_Clip] = []
        window_samples = 0
        for key, members in read_raw_shard(url, rejects):
            clip = _Clip(index=len(clips), key=key, meta={})
            clips.append(clip)
            try:
                self._decode(clip, members)
            except Exception as exc:  # noqa: BLE001 - any decode failure rejects this clip only
                rejects.append(Reject(name, key, "decode_failed", f"{type(exc).__name__}: {exc}"[:500]))
                log.warning("cannot decode %s in %s: %s", key, url, exc)
                continue
            window.append(clip)
            window_samples += clip.wav.shape[-1]
            if window_samples >= self.cfg.window_seconds * self.codec.sample_rate:
                self._encode_window(window, summary, rejects)
                window, window_samples = [], 0
        self._encode_window(window, summary, rejects)
        summary.clips = len(clips)
        done = [c for c in clips if c.codes is not None]
        summary.written = len(done)
        summary.aligned = sum(c.alignment is not None for c in done)
        summary.align_seconds = round(summary.align_seconds, 3)
        summary.rejected = len(rejects)
        summary.frames = int(sum(c.codes.shape[1] for c in done))
        summary.audio_seconds = round(sum(float(c.meta["duration"]) for c in done), 3)
        total = summary.frames * self.codec.hop_length
        summary.padding = round(summary.padding / (summary.padding + total), 4) if total else 0.0
        summary.rejects = [asdict(r) for r in rejects]
        samples = [self._sample(c, name) for c in done]
        summary.seconds = round(time.perf_counter() - start, 3)
        summary.decode_seconds = round(summary.seconds - summary.encode_seconds - summary.align_seconds, 3)
        summary.encode_seconds = round(summary.encode_seconds, 3)
        return summary, samples

    def _sample(self, clip: _Clip, shard: str) -> dict:
        raw = {k: clip.meta[k] for k in _RAW_FIELDS}
        extra = {k: v for k, v in clip.meta.items() if k not in _RAW_FIELDS}
        extra.update(codebook_size=self.codec.codebook_size, source_shard=shard, codec_identity=self.identity)
        meta = TokenMeta(**RawMeta(**raw).to_dict(), codec=self.spec, frame_rate=float(self.codec.frame_rate),
                         num_frames=int(clip.codes.shape[1]), num_codebooks=int(clip.codes.shape[0]),
                         extra=extra)
        align = None
        if clip.alignment is not None:
            align = alignment_member(clip.alignment, self.codec.frame_rate, clip.codes.shape[1])
        return token_sample(clip.key, clip.codes, meta, align)

