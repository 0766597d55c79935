"""The codec interface every backend implements, `load_codec(spec)`, checkpoints and chunked encoding.

Shape letters: B batch, C channels, T samples, Q codebooks, F frames.

A backend implements only `_encode_mono` / `_decode_codes` on mono audio at its own `sample_rate`, plus
`config_dict` / `from_config` for checkpoints. `Codec.encode` does the edge work (down-mix, resample, zero
the padding, frame lengths) once for every backend.
"""

from __future__ import annotations

import abc
import importlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from codec.audio import length_mask, resample, resampled_length, to_mono

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EncodedBatch:
    """Codes of a padded batch. Frames past `frame_lengths[b]` are padding (value 0)."""

    codes: torch.Tensor  # [B, Q, F] int64
    frame_lengths: torch.Tensor  # [B] int64


class Codec(abc.ABC, torch.nn.Module):
    """A residual-VQ neural audio codec: wav <-> integer codes.

    Backends implement `_encode_mono` / `_decode_codes` on mono audio at `sample_rate`;
    the public `encode` / `decode` handle padding, lengths, down-mix and resampling.
    Outputs come back on the device of the input tensor; the work runs on the codec's device.
    """

    backend_name: str = ""  # set by @register_codec; written into config.json
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int

    # ---- what a backend implements -------------------------------------------------------------------
    @abc.abstractmethod
    def _encode_mono(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wav [B, 1, T] mono at `sample_rate`, zero past `lengths` -> codes [B, Q, num_frames(T)] int64.

        Must treat the whole batch at once (no per-item loop on the hot path) where the model allows it.
        """

    @abc.abstractmethod
    def _decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q, F] -> wav [B, 1, about F * hop_length] at `sample_rate`."""

    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments; `from_config(config_dict())` rebuilds the architecture."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        """Build the architecture (weights are loaded afterwards by `from_pretrained`)."""

    @classmethod
    def from_name(cls, name: str, *, random: bool = False, bandwidth: float | None = None,
                  seed: int = 0) -> Codec:
        """Build a named spec (see `load_codec`); only backends registered with named specs have any."""
        raise NotImplementedError(f"{cls.__name__} has no named specs (asked for {name!r})")

    # ---- derived properties ---------------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        """Samples per frame at `sample_rate`."""
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def device(self) -> torch.device:
        p = next(iter(self.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def num_frames(self, num_samples: torch.Tensor | int) -> torch.Tensor | int:
        """Frames the encoder emits for `num_samples` samples at `sample_rate` (ceil division)."""
        hop = self.hop_length
        if isinstance(num_samples, torch.Tensor):
            return torch.div(num_samples + hop - 1, hop, rounding_mode="floor")
        return -(-num_samples // hop)

    # ---- public encode / decode -----------------------------------------------------------------------
    def prepare(self, wav: torch.Tensor, lengths: torch.Tensor | None = None,
                sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The edge: wav [B, C, T] at `sample_rate` -> (mono wav [B, 1, T'] at the codec rate, lengths [B]).

        Down-mixes, resamples, trims to the longest item and zeroes every padded sample (so whatever a
        caller left in the padding cannot leak into the codes).
        """
        if wav.dim() != 3:
            raise ValueError(f"encode expects wav [B, C, T], got shape {tuple(wav.shape)} "
                             "(use codec.audio.pad_batch to build a batch)")
        batch = wav.shape[0]
        if lengths is None:
            lengths = torch.full((batch,), wav.shape[-1], dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).to(wav.device)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape [{batch}], got {tuple(lengths.shape)}")
        if batch and (int(lengths.min()) < 0 or int(lengths.max()) > wav.shape[-1]):
            raise ValueError(f"lengths must lie in [0, {wav.shape[-1]}], got {lengths.tolist()}")
        sr = int(sample_rate or self.sample_rate)
        wav = to_mono(wav.float())
        if sr != self.sample_rate:
            wav = resample(wav, sr, self.sample_rate)
            lengths = resampled_length(lengths, sr, self.sample_rate)
        max_len = int(lengths.max()) if batch else 0
        wav = wav[..., :max_len] * length_mask(lengths, max_len)[:, None, :]
        return wav, lengths

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None,
               sample_rate: int | None = None) -> EncodedBatch:
        """wav [B, C, T] (any channel count, any rate; `lengths` [B] in input samples) -> codes [B, Q, F].

        F = ceil(T_max / hop_length) at the codec rate; frames past `frame_lengths[b]` are 0.
        """
        out_device = wav.device
        wav, lengths = self.prepare(wav, lengths, sample_rate)
        frame_lengths = self.num_frames(lengths)
        num_f = int(frame_lengths.max()) if len(frame_lengths) else 0
        if num_f == 0:
            codes = torch.zeros(wav.shape[0], self.num_codebooks, 0, dtype=torch.long)
        else:
            codes = self._encode_mono(wav.to(self.device), lengths.to(self.device))[..., :num_f]
            if codes.shape[-1] != num_f:
                raise RuntimeError(f"{type(self).__name__} emitted {codes.shape[-1]} frames for "
                                   f"{wav.shape[-1]} samples, expected {num_f}")
            codes = codes.long() * length_mask(frame_lengths.to(codes.device), num_f)[:, None, :]
        return EncodedBatch(codes.to(out_device), frame_lengths.to(out_device))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, Q, F] -> wav [B, 1, F * hop_length] at `sample_rate`.

        Q may be fewer than `num_codebooks` (the first Q levels are summed). With `frame_lengths`, samples
        past `frame_lengths[b] * hop_length` are zeroed.
        """
        if codes.dim() != 3:
            raise ValueError(f"decode expects codes [B, Q, F], got shape {tuple(codes.shape)}")
        if not 1 <= codes.shape[1] <= self.num_codebooks:
            raise ValueError(f"codes have {codes.shape[1]} codebooks; this codec has {self.num_codebooks}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        out_device = codes.device
        num_t = codes.shape[-1] * self.hop_length
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0, device=out_device)
        wav = self._decode_codes(codes.long().to(self.device))
        wav = torch.nn.functional.pad(wav, (0, max(0, num_t - wav.shape[-1])))[..., :num_t]
        if frame_lengths is not None:
            valid = frame_lengths.to(wav.device).long() * self.hop_length
            wav = wav * length_mask(valid, num_t)[:, None, :]
        return wav.to(out_device)

    # ---- long audio ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_long(self, wav: torch.Tensor, sample_rate: int | None = None, chunk_seconds: float = 30.0,
                    overlap_seconds: float = 2.0, chunks_per_batch: int = 1,
                    progress: bool = False) -> torch.Tensor:
        """One long clip wav [C, T] (or [T]) -> codes [Q, F], F = ceil(T' / hop_length) at the codec rate.

        The clip is cut into windows of `chunk_seconds` overlapping by `overlap_seconds`, both rounded to
        whole frames so every window starts on a frame boundary. Each window keeps only its interior: half
        the overlap is dropped at each inner edge, so every kept frame had at least overlap / 2 of real
        context on both sides. For a codec whose receptive field is shorter than that (no LSTM / attention
        over the whole clip) the stitched codes equal the unchunked ones. Peak memory grows with
        `chunk_seconds * chunks_per_batch`, not with the clip length.
        """
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2:
            raise ValueError(f"encode_long expects one clip [C, T] or [T], got shape {tuple(wav.shape)}")
        out_device = wav.device
        sr = int(sample_rate or self.sample_rate)
        mono = resample(to_mono(wav.float()), sr, self.sample_rate)[0]  # [T']; O(T) memory, cheap
        total_f = self.num_frames(mono.shape[-1])
        hop = self.hop_length
        chunk_f = max(1, int(round(chunk_seconds * self.frame_rate)))
        overlap_f = int(round(overlap_seconds * self.frame_rate))
        if not 0 <= overlap_f < chunk_f:
            raise ValueError(f"need 0 <= overlap ({overlap_seconds}s) < chunk ({chunk_seconds}s)")
        if total_f <= chunk_f:
            return self.encode(mono[None, None]).codes[0].to(out_device)
        stride_f = chunk_f - overlap_f
        left_f, right_f = overlap_f // 2, overlap_f - overlap_f // 2
        starts = list(range(0, total_f - chunk_f + stride_f, stride_f))  # last window reaches the end
        out = torch.zeros(self.num_codebooks, total_f, dtype=torch.long)
        bar = tqdm(total=len(starts), desc="encode chunks", unit="chunk", disable=not progress)
        for i in range(0, len(starts), chunks_per_batch):
            group = starts[i:i + chunks_per_batch]
            pieces = [mono[s * hop:(s + chunk_f) * hop] for s in group]
            lengths = torch.tensor([p.shape[-1] for p in pieces])
            batch = torch.zeros(len(pieces), 1, int(lengths.max()), device=mono.device)
            for b, p in enumerate(pieces):
                batch[b, 0, :p.shape[-1]] = p
            codes = self.encode(batch, lengths).codes.cpu()
            for b, s in enumerate(group):
                keep_from = 0 if s == 0 else left_f
                keep_to = min(chunk_f, total_f - s)
                if s + chunk_f < total_f:
                    keep_to = chunk_f - right_f
                out[:, s + keep_from:s + keep_to] = codes[b, :, keep_from:keep_to]
            bar.update(len(group))
        bar.close()
        return out.to(out_device)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` (backend name + `config_dict()`) and `model.safetensors` into `directory`."""
        if not self.backend_name:
            raise TypeError(f"{type(self).__name__} is not registered; decorate it with @register_codec")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"backend": self.backend_name, "format": CHECKPOINT_FORMAT, "config": self.config_dict()}
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"backend": self.backend_name})
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return directory

    @staticmethod
    def from_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> Codec:
        """Load a codec saved by `save_pretrained` (safetensors + JSON; no pickle anywhere)."""
        directory = Path(directory)
        backend, config = read_export_config(directory, "codec checkpoint", "")
        codec = codec_class(backend).from_config(config)
        state = load_file(str(directory / WEIGHTS_FILE))
        missing, unexpected = codec.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"codec checkpoint {directory / WEIGHTS_FILE} does not match backend "
                             f"{backend!r}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return codec.to(device).eval()


# ---- registry ----------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Codec]] = {}
# Built-in backends are imported lazily, so `codec.base` imports no backend and a checkpoint names its
# backend by a short string (never a module path taken from a file).
_BUILTIN_BACKENDS = {"encodec": "codec.backends.encodec_codec", "rvq": "codec.backends.rvq_codec"}
# Named specs accepted by load_codec -> backend that builds them through `from_name`.
_NAMED_SPECS: dict[str, str] = {"encodec_24khz": "encodec", "encodec_48khz": "encodec"}


def register_codec(name: str, named_specs: tuple[str, ...] = ()) -> Callable[[type[Codec]], type[Codec]]:
    """Class decorator: make a backend loadable from checkpoints (by `name`) and, optionally, by spec names.

    A backend with named specs implements `from_name(name, *, random, bandwidth, seed) -> Codec`.
    """

    def wrap(cls: type[Codec]) -> type[Codec]:
        _REGISTRY[name] = cls
        cls.backend_name = name
        for spec in named_specs:
            _NAMED_SPECS[spec] = name
        return cls

    return wrap


def codec_class(backend: str) -> type[Codec]:
    """The registered class for a backend name, importing a built-in backend on first use."""
    if backend not in _REGISTRY and backend in _BUILTIN_BACKENDS:
        importlib.import_module(_BUILTIN_BACKENDS[backend])
    if backend not in _REGISTRY:
        known = sorted(set(_REGISTRY) | set(_BUILTIN_BACKENDS))
        raise ValueError(f"unknown codec backend {backend!r}; known: {known}")
    return _REGISTRY[backend]


_SPEC_RE = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)(?P<random>:random)?(?:@(?P<kbps>\d+(?:\.\d+)?))?$")


def read_export_config(directory: Path, label: str, missing_hint: str) -> tuple[str, dict]:
    """(backend, config) of a codec saved by `save_pretrained`; errors start with `label` and the path."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{label} {directory}: missing {name}{missing_hint}")
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
        return meta["backend"], meta["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{label} {directory / CONFIG_FILE}: malformed config ({e})") from e


def load_codec(spec: str | Path, device: str | torch.device = "cpu", seed: int = 0) -> Codec:
    """Build a codec from a spec, in eval mode on `device`.

    Specs:
      - `encodec_24khz`, `encodec_48khz`: released EnCodec weights (downloaded once into the torch hub
        cache; a clear `CodecDownloadError` when offline). Default bandwidth 6 kbps.
      - `NAME@KBPS`, e.g. `encodec_24khz@6` -> 8 codebooks (24 kHz: 1.5/3/6/12/24 kbps = 2/4/8/16/32).
      - `NAME:random[@KBPS]`: a seeded random instance of the same architecture with initialised
        codebooks (for tests; downloads nothing). `seed` picks the instance.
      - a directory written by `Codec.save_pretrained` (config.json + model.safetensors).
    """
    spec_str = str(spec)
    path = Path(spec_str).expanduser()
    if path.is_dir():
        return Codec.from_pretrained(path, device)
    match = _SPEC_RE.match(spec_str)
    if match is None or match["name"] not in _NAMED_SPECS:
        known = sorted(_NAMED_SPECS)
        raise ValueError(f"unknown codec spec {spec_str!r}: not an existing checkpoint directory, and not "
                         f"one of {known} (optionally with ':random' and/or '@KBPS')")
    cls = codec_class(_NAMED_SPECS[match["name"]])
    bandwidth = float(match["kbps"]) if match["kbps"] else None
    codec = cls.from_name(match["name"], random=bool(match["random"]), bandwidth=bandwidth, seed=seed)
    log.info("loaded codec %s: %d codebooks x %d, %.1f frames/s at %d Hz", spec_str, codec.num_codebooks,
             codec.codebook_size, codec.frame_rate, codec.sample_rate)
    return codec.to(device).eval()
