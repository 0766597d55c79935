"""Tokenize: raw shards ({key}.flac + {key}.json) -> token shards ({key}.codes.npy + {key}.json).

One output shard per input shard (`raw-000012.tar` -> `tokens-000012.tar`), written under `NAME.tmp` and
renamed when complete, so a killed run resumes by skipping finished shards; a leftover `.tmp` is stale by
construction (exactly one process owns each shard) and is deleted by its owner before redoing the shard.

Inside a shard, clips are decoded, down-mixed and resampled to the codec rate, then encoded in
length-sorted padded batches bounded by total padded samples: one codec forward per batch instead of one
per file. Codes are written in the original order. A clip that cannot be decoded or encoded goes to
`OUTPUT/rejects.jsonl` (shard, key, reason, detail) and to the shard's summary; the run goes on.

Distributed: every launcher rank (RANK / WORLD_SIZE from `torchrun` / `deepspeed`) and every local worker
process takes a disjoint strided subset of the sorted input shards.

Shape letters: B batch, C channels, T samples, Q codebooks, F frames.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander
from webdataset.writer import TarWriter

from codec.audio import load_audio, pad_batch, resample, to_mono
from codec.base import Codec, load_codec
from codec.identity import codec_identity
from data_pipeline.alignment.schema import Alignment
from data_pipeline.records import ALIGN_EXT, AUDIO_EXT, CODES_EXT, META_EXT, REJECTS_FILE, RawMeta, TokenMeta
from data_pipeline.sharding import expand_shards, process_place, split_shards
from data_pipeline.token_codec import claim_token_folder

log = logging.getLogger(__name__)

SUMMARY_DIR = "summaries"
TMP_SUFFIX = ".tmp"
_RAW_FIELDS = {"text", "speaker", "duration", "sample_rate", "source"}
ALIGN_MODES = ("auto", "exact", "off")


@dataclass
class TokenizeConfig:
    codec: str = "encodec_24khz"  # a `codec.base.load_codec` spec
    # Padded audio per codec forward (B * T_max); 0 = one clip per forward. None: 8 s on CPU, 200 s on GPU.
    # On CPU the convolutions at the audio rate dominate and already fill a core with one clip, while
    # big batches spill out of cache: scripts/bench_tokenize.py measured batches of 30 s+ as slower there.
    batch_seconds: float | None = None
    batch_frames: int | None = None  # the same bound in codec frames; overrides batch_seconds
    max_padding: float = 0.1  # a batch closes before a clip shorter than (1 - max_padding) * its longest
    window_seconds: float = 1200.0  # decoded audio held at once and length-sorted
    long_clip_seconds: float = 60.0  # clips longer than this are encoded alone, in overlapping chunks
    device: str = "cpu"  # "cuda" picks cuda:LOCAL_RANK
    num_workers: int = 1  # processes on this machine, each with its own codec copy
    rank: int | None = None  # None: RANK / WORLD_SIZE env, else one process
    world_size: int | None = None
    seed: int = 0  # codec seed for `:random` specs (must match across processes)
    progress: bool = True
    # Phone alignments ({key}.align.json): "exact" keeps the synthesiser timings a raw shard carries;
    # "auto" also runs the forced aligner on every other clip and rejects the clips it cannot fit;
    # "off" writes none.
    align: str = "auto"
    aligner: str | None = None  # aligner directory (None: models/aligner)

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {self.align!r}")


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


def token_shard_name(raw_name: str) -> str:
    """`raw-000012.tar` -> `tokens-000012.tar`; other names are kept."""
    return "tokens-" + raw_name[len("raw-"):] if raw_name.startswith("raw-") else raw_name


def codes_dtype(codebook_size: int) -> np.dtype:
    return np.dtype(np.int16) if codebook_size <= 32768 else np.dtype(np.int32)


def alignment_member(alignment: Alignment, frame_rate: float, num_frames: int) -> bytes:
    """`{key}.align.json` of a token shard: the alignment at the codec's frame rate, with the frames per
    phone (`frame_durations`, summing to `num_frames`) and the canonical phone ids."""
    alignment.frame_rate = float(frame_rate)
    record = alignment.to_json()
    record.update(num_frames=int(num_frames), phone_ids=alignment.phone_ids().tolist(),
                  frame_durations=alignment.frame_durations(num_frames).tolist())
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def token_sample(key: str, codes: np.ndarray, meta: TokenMeta, align: bytes | None = None) -> dict:
    """The tar members of one token sample: `{key}.codes.npy` + `{key}.json` (+ `{key}.align.json`)."""
    if codes.ndim != 2 or codes.shape != (meta.num_codebooks, meta.num_frames):
        raise ValueError(f"{key}: codes {codes.shape} disagree with metadata "
                         f"({meta.num_codebooks}, {meta.num_frames})")
    buf = io.BytesIO()
    np.save(buf, codes, allow_pickle=False)
    sample = {"__key__": key, CODES_EXT: buf.getvalue(),
              META_EXT: json.dumps(asdict(meta), ensure_ascii=False).encode("utf-8")}
    if align is not None:
        sample[ALIGN_EXT] = align
    return sample


def write_tar(path: Path, samples: Iterable[dict]) -> int:
    """Write tar samples to `path`, flushed to disk; returns the sample count."""
    count = 0
    with open(path, "wb") as f:
        with TarWriter(f, encoder=False, mtime=0) as writer:
            for sample in samples:
                writer.write(sample)
                count += 1
        f.flush()
        os.fsync(f.fileno())
    return count


def write_shard_atomically(path: Path, samples: Iterable[dict]) -> int:
    """Write tar samples to `path` via `path.tmp` + rename, so readers never see half a shard."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    count = write_tar(tmp, samples)
    os.replace(tmp, path)
    return count


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


# ---- the run ---------------------------------------------------------------------------------------
def publish_shard(out_dir: Path, summary: ShardSummary, samples: list[dict]) -> None:
    """Write a tokenized shard: tar to `.tmp`, then its summary, then its rejects, then the rename that
    commits it. A kill before the rename leaves only a stale `.tmp` (and at worst duplicated reject
    lines, never lost ones)."""
    out_path = out_dir / summary.output
    tmp = out_path.with_name(out_path.name + TMP_SUFFIX)
    write_tar(tmp, samples)
    summaries = out_dir / SUMMARY_DIR
    summaries.mkdir(exist_ok=True)
    summary_path = summaries / (Path(summary.output).stem + ".json")
    summary_tmp = summary_path.with_name(summary_path.name + TMP_SUFFIX)
    summary_tmp.write_text(json.dumps(asdict(summary), indent=1, ensure_ascii=False) + "\n")
    os.replace(summary_tmp, summary_path)
    if summary.rejects:
        lines = "".join(json.dumps({k: r[k] for k in ("shard", "key", "reason", "detail")},
                                   ensure_ascii=False) + "\n" for r in summary.rejects)
        with open(out_dir / REJECTS_FILE, "a", encoding="utf-8") as f:
            f.write(lines)  # one append per shard
    os.replace(tmp, out_path)


# ---- the run ---------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    shards: int = 0  # shards owned by this process (rank x workers)
    skipped: int = 0  # already finished by an earlier run
    done: int = 0
    clips: int = 0
    written: int = 0
    aligned: int = 0
    rejected: int = 0
    audio_seconds: float = 0.0
    forwards: int = 0
    encode_seconds: float = 0.0  # summed over workers
    align_seconds: float = 0.0  # summed over workers
    seconds: float = 0.0  # wall time

    def add(self, s: ShardSummary) -> None:
        self.done += 1
        self.encode_seconds += s.encode_seconds
        self.clips += s.clips
        self.written += s.written
        self.aligned += s.aligned
        self.align_seconds += s.align_seconds
        self.rejected += s.rejected
        self.audio_seconds += s.audio_seconds
        self.forwards += s.forwards

    def merge(self, other: RunSummary) -> None:
        for name in asdict(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def owned_shards(shards: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards of local worker `worker` on launcher rank `rank`: disjoint over all (rank, worker)."""
    return split_shards(shards, rank * num_workers + worker, world_size * num_workers)


def _device(cfg: TokenizeConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda":
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(cfg.device)


def _run_worker(urls: list[str], out_dir: str, cfg: TokenizeConfig, worker: int, local_rank: int,
                codec: Codec | None = None) -> RunSummary:
    out = Path(out_dir)
    run = RunSummary(shards=len(urls))
    todo = []
    for url in urls:
        final = out / token_shard_name(Path(url).name)
        stale = final.with_name(final.name + TMP_SUFFIX)
        if final.exists():
            run.skipped += 1
            continue
        if stale.exists():
            log.info("removing stale %s from an interrupted run", stale)
            stale.unlink()  # this process is the shard's only owner, so nobody else is writing it
        todo.append(url)
    if not todo:
        return run
    if cfg.num_workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.num_workers))
    start = time.perf_counter()
    codec = codec or load_codec(cfg.codec, device=_device(cfg, local_rank), seed=cfg.seed)
    tokenizer = ShardTokenizer(codec, cfg.codec, cfg)
    bar = tqdm(todo, desc=f"tokenize[{worker}]", unit="shard", position=worker, disable=not cfg.progress)
    for url in bar:
        summary, samples = tokenizer.tokenize_shard(url)
        publish_shard(out, summary, samples)
        run.add(summary)
        log.info("%s -> %s: %d clips, %d written, %d rejected, %.1f s audio in %.1f s (%d forwards, "
                 "padding %.1f%%)", summary.input, summary.output, summary.clips, summary.written,
                 summary.rejected, summary.audio_seconds, summary.seconds, summary.forwards,
                 100 * summary.padding)
        bar.set_postfix(clips=run.written, rejected=run.rejected, refresh=False)
    run.seconds = time.perf_counter() - start
    return run


def tokenize_shards(input_spec: str | Path | list[str], output_dir: str | Path,
                    cfg: TokenizeConfig | None = None, codec: Codec | None = None) -> RunSummary:
    """Tokenize this process's share of the raw shards into `output_dir`; returns what it did.

    Rerunning after a kill skips finished shards. Under `torchrun` / `deepspeed` every rank calls this
    with the same arguments; `cfg.num_workers` > 1 splits the rank's share over local processes.
    `codec`: an already built codec to use instead of loading `cfg.codec` (one worker only); `cfg.codec`
    is still what the token metadata records, so it must describe that codec.
    """
    cfg = cfg or TokenizeConfig()
    if codec is not None and cfg.num_workers > 1:
        raise ValueError("pass a codec instance only with num_workers == 1 (workers load their own)")
    shards = expand_shards(input_spec if isinstance(input_spec, list) else str(input_spec))
    if not shards:
        raise FileNotFoundError(f"no raw shards (*.tar) found in {input_spec}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    claim_token_folder(out, cfg.codec)  # refuses a folder another codec filled
    place = process_place(cfg.rank, cfg.world_size)
    workers = max(1, cfg.num_workers)
    shares = [owned_shards(shards, place.rank, place.world_size, w, workers) for w in range(workers)]
    log.info("rank %d/%d: %d of %d shards over %d worker(s), codec %s", place.rank, place.world_size,
             sum(map(len, shares)), len(shards), workers, cfg.codec)
    start = time.perf_counter()
    total = RunSummary()
    if workers == 1:
        total.merge(_run_worker(shares[0], str(out), cfg, 0, place.local_rank, codec))
    else:
        # spawn, not fork: forking a process whose torch thread pools already started can deadlock
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            args = [(share, str(out), cfg, w, place.local_rank) for w, share in enumerate(shares)]
            for part in pool.starmap(_run_worker, args):
                total.merge(part)
    total.seconds = time.perf_counter() - start  # wall time, not the sum over workers
    return total
