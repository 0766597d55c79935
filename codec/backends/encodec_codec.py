"""`EncodecCodec`: Meta's EnCodec (the `encodec` package) behind the `Codec` interface.

- `encodec_24khz`: causal, mono, 75 frames/s, 1.5/3/6/12/24 kbps = 2/4/8/16/32 codebooks of 1024.
- `encodec_48khz`: non-causal, stereo, RMS-normalised input, 150 frames/s, 3/6/12/24 kbps = 2/4/8/16.
- `EncodecConfig` also builds small same-family models for tests (fewer filters, no LSTM, ...).

Shape letters: B batch, C channels, T samples, Q codebooks, F frames, D embedding dim.
"""

from __future__ import annotations

import math
import os
import urllib.error
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from encodec import EncodecModel
from encodec import modules as enc_modules
from encodec import quantization as enc_quant

from codec.base import Codec, register_codec

# Released checkpoints: file name -> the sha256 prefix encodec itself checks.
ENCODEC_CHECKPOINTS = {
    "encodec_24khz": ("encodec_24khz-d7cc33bc.th", "d7cc33bc"),
    "encodec_48khz": ("encodec_48khz-7e698e3e.th", "7e698e3e"),
}
# Overridable so a cluster without internet can point at an internal mirror.
ENCODEC_URL_ENV = "CODECTTS_ENCODEC_URL"
ENCODEC_DEFAULT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"
DEFAULT_BANDWIDTH = 6.0  # kbps; VALL-E's setting (8 codebooks at 24 kHz)
# A normalising model (48 kHz) discards each clip's loudness when its scale is not stored with the
# codes; decoded audio is brought to this RMS (about -20 dBFS, a usual speech level).
DECODE_RMS = 0.1
# Random codebooks: entries ~ N(mean, COV_SCALE * cov) of the residual at that level, so every level
# splits its residual into many cells (about half of the entries of a ~2 s clip are distinct).
COV_SCALE = 0.1
INIT_FRAMES_PER_SIGNAL = 64


class CodecDownloadError(RuntimeError):
    """Pretrained weights could not be fetched (offline machine, blocked host, bad checksum)."""


# (preset name, seed) -> state dict of a seeded random model; see EncodecCodec.from_name.
_RANDOM_WEIGHTS: dict[tuple[str, int], dict[str, torch.Tensor]] = {}


@dataclass
class EncodecConfig:
    """Architecture of an EnCodec model plus how many codebooks to use."""

    name: str = "encodec_24khz"
    sample_rate: int = 24_000
    channels: int = 1  # model channels; mono input is copied into each one
    causal: bool = True
    norm: str = "weight_norm"
    normalize: bool = False  # RMS-normalise each clip before the encoder (the 48 kHz model)
    n_filters: int = 32
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    dimension: int = 128
    lstm_layers: int = 2
    codebook_size: int = 1024
    max_codebooks: int = 32  # codebooks the quantizer holds
    num_codebooks: int = 8  # codebooks used (the bandwidth)
    target_bandwidths: list[float] = field(default_factory=lambda: [1.5, 3.0, 6.0, 12.0, 24.0])

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def kbps_per_codebook(self) -> float:
        return math.log2(self.codebook_size) * self.frame_rate / 1000

    def with_bandwidth(self, kbps: float) -> EncodecConfig:
        """A copy that uses the codebooks for `kbps` (must be one of `target_bandwidths`)."""
        if not any(math.isclose(kbps, b) for b in self.target_bandwidths):
            raise ValueError(f"{self.name} supports bandwidths {self.target_bandwidths} kbps, not {kbps}")
        return replace(self, num_codebooks=int(round(kbps / self.kbps_per_codebook)))

    def validate(self) -> None:
        if self.sample_rate % self.hop_length:
            raise ValueError(f"sample_rate {self.sample_rate} must be a multiple of hop {self.hop_length}")
        if not 1 <= self.num_codebooks <= self.max_codebooks:
            raise ValueError(f"num_codebooks {self.num_codebooks} not in [1, {self.max_codebooks}]")
        if self.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {self.channels}")


PRESETS: dict[str, EncodecConfig] = {
    "encodec_24khz": EncodecConfig(),
    "encodec_48khz": EncodecConfig(
        name="encodec_48khz", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, max_codebooks=16, num_codebooks=4, target_bandwidths=[3.0, 6.0, 12.0, 24.0]),
}


def build_encodec_model(cfg: EncodecConfig) -> EncodecModel:
    """The bare `encodec.EncodecModel` for `cfg`, with the same module tree as the released models."""
    with warnings.catch_warnings():  # encodec uses the old torch.nn.utils.weight_norm
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        common = dict(channels=cfg.channels, dimension=cfg.dimension, n_filters=cfg.n_filters,
                      ratios=list(cfg.ratios), norm=cfg.norm, causal=cfg.causal, lstm=cfg.lstm_layers)
        encoder = enc_modules.SEANetEncoder(**common)
        decoder = enc_modules.SEANetDecoder(**common)
    quantizer = enc_quant.ResidualVectorQuantizer(dimension=cfg.dimension, n_q=cfg.max_codebooks,
                                                  bins=cfg.codebook_size)
    return EncodecModel(encoder, decoder, quantizer, list(cfg.target_bandwidths), cfg.sample_rate,
                        cfg.channels, normalize=cfg.normalize, segment=None, name=cfg.name)


@register_codec("encodec", named_specs=tuple(PRESETS))
class EncodecCodec(Codec):
    """EnCodec as a `Codec`. Build with `from_name` / `load_codec`, `random`, or `EncodecCodec(config)`.

    The whole padded batch goes through one encoder forward, except for normalising models (48 kHz):
    their per-clip RMS and their time-wise GroupNorm see the whole sequence, so padding would change
    every code; those clips are encoded one by one.
    """

    def __init__(self, config: EncodecConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.model = build_encodec_model(config)
        self.sample_rate = config.sample_rate
        self.frame_rate = config.frame_rate
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, *, random: bool = False, bandwidth: float | None = None,
                  seed: int = 0) -> EncodecCodec:
        if name not in PRESETS:
            raise ValueError(f"unknown EnCodec model {name!r}; known: {sorted(PRESETS)}")
        config = PRESETS[name].with_bandwidth(DEFAULT_BANDWIDTH if bandwidth is None else bandwidth)
        if random:
            # The weights do not depend on the bandwidth (all max_codebooks levels are initialised), so
            # one seeded init per (model, seed) serves every bandwidth and every later load in-process.
            key = (name, seed)
            if key not in _RANDOM_WEIGHTS:
                if len(_RANDOM_WEIGHTS) >= 4:
                    _RANDOM_WEIGHTS.pop(next(iter(_RANDOM_WEIGHTS)))
                state = cls.random(config, seed=seed).state_dict()
                _RANDOM_WEIGHTS[key] = {k: v.detach().clone() for k, v in state.items()}
            codec = cls(config)
            codec.load_state_dict(_RANDOM_WEIGHTS[key])
            return codec.eval()
        codec = cls(config)
        codec.model.load_state_dict(pretrained_state_dict(name))
        return codec.eval()

    @classmethod
    def random(cls, config: EncodecConfig | None = None, seed: int = 0) -> EncodecCodec:
        """A seeded random model with usable codebooks (for tests). Leaves the global RNG untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            codec = cls(config or PRESETS["encodec_24khz"])
        codec.init_codebooks_(torch.Generator().manual_seed(seed))
        return codec.eval()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncodecCodec:
        known = EncodecConfig.__dataclass_fields__
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"unknown EncodecConfig keys {unknown}")
        return cls(EncodecConfig(**config))

    @torch.no_grad()
    def init_codebooks_(self, generator: torch.Generator) -> None:
        """Give a fresh model non-degenerate codebooks without data or k-means.

        A fresh EnCodec quantizer holds all-zero codebooks marked un-`inited`, so every code would be 0.
        Here the encoder embeds seeded speech-like signals; level by level, the codebook is drawn from a
        Gaussian fitted to that level's residual (shrunk by COV_SCALE so entries stay inside the data),
        and the residual passed on is what the level leaves. Codebooks are marked `inited` so a training
        forward does not overwrite them with k-means.
        """
        # 3 x 64 frames: enough for a D x D covariance, cheap for the full 24/48 kHz models
        seconds = max(0.25, INIT_FRAMES_PER_SIGNAL / self.frame_rate)
        audio = speechlike_signals(3, seconds, self.sample_rate, generator).to(self.device)
        x = audio.expand(-1, self.config.channels, -1)
        if self.config.normalize:
            x = x / (x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-8)
        emb = self.model.encoder(x)  # [B, D, F]
        emb = self._standardize_encoder_output_(emb)
        residual = emb.transpose(1, 2).reshape(-1, emb.shape[1]).double()
        for layer in self.model.quantizer.vq.layers:
            book = layer._codebook
            mean = residual.mean(0)
            centred = residual - mean
            # z @ centred / sqrt(N - 1) has covariance cov(residual): a Gaussian draw, no decomposition
            z = torch.randn(book.codebook_size, residual.shape[0], generator=generator, dtype=torch.float64)
            scale = (COV_SCALE / (residual.shape[0] - 1)) ** 0.5
            entries = (mean + scale * z.to(centred.device) @ centred).to(book.embed.dtype)
            book.embed.copy_(entries)
            book.embed_avg.copy_(entries)
            book.cluster_size.fill_(1.0)
            book.inited.fill_(1.0)
            residual = residual - book.embed.double()[book.encode(residual.to(book.embed.dtype))]

    @torch.no_grad()
    def _standardize_encoder_output_(self, emb: torch.Tensor) -> torch.Tensor:
        """Rescale the encoder's last layer so `emb` [B, D, F] has zero mean, unit std per channel.

        A random encoder's output is ~97% a per-channel constant (its biases); the signal lives in a thin
        shell around it, where float32 rounding (e.g. batch vs single-item convolutions) flips nearest-code
        decisions. Centring and scaling the last layer, as training would, makes the codes depend on the
        signal and be stable to rounding. Returns the standardized `emb`.
        """
        mean = emb.mean(dim=(0, 2))
        std = emb.std(dim=(0, 2)).clamp_min(1e-8)
        last = self.model.encoder.model[-1].conv  # encodec NormConv1d: conv, then norm (Identity/GroupNorm)
        target = last.norm if isinstance(last.norm, torch.nn.GroupNorm) else last.conv
        if hasattr(target, "weight_g"):  # old-style weight norm: scale the per-channel gain
            target.weight_g.div_(std.view(-1, 1, 1))
        else:
            target.weight.div_(std.view(-1, *([1] * (target.weight.dim() - 1))))
        target.bias.copy_((target.bias - mean) / std)
        return (emb - mean.view(1, -1, 1)) / std.view(1, -1, 1)

    # ---- Codec backend -------------------------------------------------------------------------------
    def _encode_mono(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = wav.expand(-1, self.config.channels, -1)
        if not self.config.normalize:
            return self._quantize(self.model.encoder(x))
        num_f = self.num_frames(x.shape[-1])
        codes = torch.zeros(x.shape[0], self.num_codebooks, num_f, dtype=torch.long, device=x.device)
        for b, n in enumerate(lengths.tolist()):  # see the class docstring: padding would leak
            if n == 0:
                continue
            clip = x[b:b + 1, :, :n]
            clip = clip / (clip.pow(2).mean().sqrt() + 1e-8)
            item = self._quantize(self.model.encoder(clip))
            codes[b, :, :item.shape[-1]] = item[0]
        return codes

    def _quantize(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, D, F] -> codes [B, Q, F]."""
        return self.model.quantizer.vq.encode(emb, n_q=self.num_codebooks).transpose(0, 1)

    def _decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        emb = self.model.quantizer.decode(codes.transpose(0, 1))
        wav = self.model.decoder(emb).mean(dim=1, keepdim=True)  # the 48 kHz model decodes stereo
        if self.config.normalize:
            wav = wav * DECODE_RMS
        return wav


def speechlike_signals(n: int, seconds: float, sample_rate: int, generator: torch.Generator) -> torch.Tensor:
    """n seeded signals [n, 1, T]: harmonic glides (80-300 Hz f0, vibrato), noise, syllable-rate envelopes."""
    num_t = int(seconds * sample_rate)
    t = torch.arange(num_t) / sample_rate

    def rand(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(1, generator=generator)

    out = []
    for _ in range(n):
        f_start, f_end = rand(80, 300), rand(80, 300)
        f0 = f_start + (f_end - f_start) * t / seconds + rand(5, 25) * torch.sin(2 * math.pi * rand(2, 6) * t)
        phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
        n_harm = max(1, min(12, int(sample_rate / 2 / 300)))
        voiced = sum(torch.sin(k * phase) / k for k in range(1, n_harm + 1))
        noise = torch.randn(num_t, generator=generator) * rand(0.05, 0.5)
        envelope = 0.5 * (1 + torch.sin(2 * math.pi * rand(2, 6) * t))
        out.append((0.3 * voiced + noise) * envelope * rand(0.05, 0.5))
    return torch.stack(out)[:, None, :]


def pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The released EnCodec weights, cached under `torch.hub.get_dir()/checkpoints` (loaded weights-only).

    Raises `CodecDownloadError` with what to do when the file is not cached and cannot be downloaded.
    """
    file_name, sha_prefix = ENCODEC_CHECKPOINTS[name]
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not path.is_file():
        root = os.environ.get(ENCODEC_URL_ENV, ENCODEC_DEFAULT_URL)
        url = root.rstrip("/") + "/" + file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=sha_prefix, progress=True)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise CodecDownloadError(
                f"cannot download the pretrained {name} weights from {url}: {e}. Without internet, fetch "
                f"that file on a connected machine and copy it to {path} (or set ${ENCODEC_URL_ENV} to a "
                f"mirror); for tests use '{name}:random'; or load a codec checkpoint directory.") from e
    return torch.load(path, map_location="cpu", weights_only=True)
