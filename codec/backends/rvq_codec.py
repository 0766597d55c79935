"""`RVQCodec`: our trainable codec, a SEANet encoder/decoder around a `vector_quantize_pytorch.ResidualVQ`.

It is how this project gets a working codec where pretrained weights cannot be downloaded, and it serves users
who need another sample rate or domain. Train it with `scripts/train_codec.py`; a trained codec is a directory
(`config.json` + `model.safetensors`, the format of `Codec.save_pretrained`) that `load_codec(DIR)` opens.

Shape letters: B batch, T samples, Q codebooks, F frames, D latent dimension.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from vector_quantize_pytorch import ResidualVQ

from codec.backends.seanet import SEANetDecoder, SEANetEncoder, hop_of
from codec.backends.spectral import SpectralDecoder, SpectralEncoder
from codec.base import CHECKPOINT_FORMAT, CONFIG_FILE, WEIGHTS_FILE, Codec, register_codec


@dataclass
class RVQCodecConfig:
    """Architecture and quantizer settings (saved in the checkpoint's `config.json`)."""

    # "seanet": EnCodec-style convolutions at the sample rate (codec.backends.seanet); "spectral": STFT in,
    # ConvNeXt at the frame rate, inverse STFT out (codec.backends.spectral), ~10x cheaper per step
    architecture: str = "seanet"
    sample_rate: int = 16000
    strides: tuple[int, ...] = (2, 4, 5, 8)  # hop = prod(strides) = 320 -> 50 frames/s at 16 kHz
    encoder_channels: int = 24
    decoder_channels: int = 32
    dimension: int = 128
    dilations: tuple[int, ...] = (1, 3, 9)
    compress: int = 2  # residual units' hidden width = channels / compress
    max_channels: int = 384
    spectral_dim: int = 256  # "spectral" only: ConvNeXt width and depths
    encoder_layers: int = 4
    decoder_layers: int = 8
    num_codebooks: int = 8
    codebook_size: int = 1024
    kmeans_init: bool = True
    kmeans_iters: int = 10
    ema_decay: float = 0.99
    threshold_ema_dead_code: float = 2.0
    commitment_weight: float = 1.0
    # probability that a training step keeps only a random prefix of the codebooks (EnCodec's bandwidth
    # sampling), so decoding from the first few codebooks stays usable
    quantizer_dropout: float = 0.5

    @property
    def hop_length(self) -> int:
        return hop_of(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["strides"], d["dilations"] = list(self.strides), list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RVQCodecConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown RVQCodecConfig keys {unknown}")
        d = dict(d)
        for key in ("strides", "dilations"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        return cls(**d)


@dataclass
class RVQOutput:
    """What a training forward returns."""

    wav: torch.Tensor  # [B, 1, T] reconstruction
    codes: torch.Tensor  # [B, Q, F]; -1 where quantizer dropout skipped a codebook
    commit_loss: torch.Tensor  # scalar, already weighted by `commitment_weight`
    latents: torch.Tensor | None = None  # [B, D, F] encoder output before quantization (for auxiliary heads)


@register_codec("rvq")
class RVQCodec(Codec):
    """EnCodec-style codec: SEANet encoder -> ResidualVQ (k-means init, EMA, dead-code reset) -> decoder."""

    def __init__(self, config: RVQCodecConfig | None = None):
        super().__init__()
        self.config = config = config or RVQCodecConfig()
        self.sample_rate = config.sample_rate
        self.frame_rate = config.frame_rate
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        if config.architecture == "seanet":
            self.encoder = SEANetEncoder(config.encoder_channels, config.dimension, config.strides,
                                         config.dilations, config.compress, config.max_channels)
            self.decoder = SEANetDecoder(config.decoder_channels, config.dimension, config.strides,
                                         config.dilations, config.compress, config.max_channels)
        elif config.architecture == "spectral":
            self.encoder = SpectralEncoder(config.hop_length, config.spectral_dim, config.dimension,
                                           config.encoder_layers)
            self.decoder = SpectralDecoder(config.hop_length, config.spectral_dim, config.dimension,
                                           config.decoder_layers)
        else:
            raise ValueError(f"unknown architecture {config.architecture!r}; expected 'seanet' or 'spectral'")
        self.quantizer = ResidualVQ(
            dim=config.dimension,
            num_quantizers=config.num_codebooks,
            codebook_size=config.codebook_size,
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            decay=config.ema_decay,
            threshold_ema_dead_code=config.threshold_ema_dead_code,
            commitment_weight=config.commitment_weight,
            quantize_dropout=config.quantizer_dropout > 0,
        )

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    # ---- checkpoint config ------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RVQCodec:
        return cls(RVQCodecConfig.from_dict(config))

    # ---- training ---------------------------------------------------------------------------------------
    def _quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """latents [B, D, F] -> (quantized [B, D, F], codes [B, Q, F], commit loss). Always fp32: codebook
        distances and EMA updates are not safe in bf16."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            quantized, codes, losses = self.quantizer(latents.float().transpose(1, 2))
        return quantized.transpose(1, 2), codes.transpose(1, 2), losses.sum()

    def forward(self, wav: torch.Tensor) -> RVQOutput:
        """Training pass on mono audio at `sample_rate`: wav [B, 1, T] with T a multiple of `hop_length`."""
        if wav.dim() != 3 or wav.shape[1] != 1 or wav.shape[-1] % self.hop_length:
            raise ValueError(f"forward expects [B, 1, T] with T a multiple of {self.hop_length}, "
                             f"got {tuple(wav.shape)}")
        if self.training and self.config.quantizer_dropout > 0:
            self.quantizer.quantize_dropout = random.random() < self.config.quantizer_dropout
        latents = self.encoder(wav)
        quantized, codes, commit = self._quantize(latents)
        return RVQOutput(self.decoder(quantized.to(wav.dtype)), codes, commit, latents)

    # ---- Codec backend ----------------------------------------------------------------------------------
    def _encode_mono(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wav [B, 1, T] at `sample_rate` (zero past `lengths`) -> codes [B, Q, ceil(T / hop)]."""
        num_f = self.num_frames(wav.shape[-1])
        wav = torch.nn.functional.pad(wav, (0, num_f * self.hop_length - wav.shape[-1]))
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return self._nearest_codes(self.encoder(wav).float())

    def _nearest_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, F] -> codes [B, Q, F]: residual nearest-code search that never updates codebooks.

        argmax(x·Cᵀ - ½‖C‖²) picks the same code as ResidualVQ's cdist (‖x‖² is constant per row) but skips
        the square root and the per-row norms, which made encoding cost ~1.6× more on the CPU.
        """
        residual = self.quantizer.project_in(latents.transpose(1, 2))  # [B, F, D]
        codes = []
        for codebook in self.quantizer.codebooks:  # [K, D]
            half_sq_norm = 0.5 * codebook.pow(2).sum(dim=-1)
            index = (residual @ codebook.t() - half_sq_norm).argmax(dim=-1)  # [B, F]
            residual = residual - codebook[index]
            codes.append(index)
        return torch.stack(codes, dim=1)

    def quantized_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q', F], a prefix of Q' <= num_codebooks levels -> summed code vectors [B, D, F]."""
        codebooks = self.quantizer.codebooks[: codes.shape[1]]  # [Q', K, D]
        level = torch.arange(codes.shape[1], device=codes.device)[None, :, None]
        return self.quantizer.project_out(codebooks[level, codes].sum(dim=1)).transpose(1, 2)

    def _decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q', F] -> wav [B, 1, F * hop_length]."""
        return self.decoder(self.quantized_from_codes(codes).float())

    # ---- export -----------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """`Codec.save_pretrained`'s format with float tensors stored in `dtype` (fp16 halves the file;
        loading casts back to fp32). The codebooks' EMA statistics are kept, so training can go on from it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {}
        for name, tensor in self.state_dict().items():
            tensor = tensor.detach().cpu()
            state[name] = (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous().clone()
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"backend": self.backend_name})
        meta = {"backend": self.backend_name, "format": CHECKPOINT_FORMAT, "config": self.config_dict()}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory
