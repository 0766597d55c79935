"""Which tokens a codec makes: an identity that changes when the codes would, and only then.

Tokens depend on the encoder and the codebooks; the decoder only turns them back into sound. So a
decoder-only fine-tune (codec/training/decoder_finetune.py) keeps the identity, and token shards made before
it stay valid, while a codec retrained end to end gets a new one. The identity of a checkpoint directory is a
hash of its encoder and codebook tensors (names, shapes, dtypes, bytes), minus the quantizer's EMA
statistics, which training updates but encoding never reads. A named spec (`encodec_24khz@6`) is its own
identity.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open

from codec.base import WEIGHTS_FILE

_DECODER_PREFIXES = ("decoder.", "model.decoder.")  # rvq backend; encodec backend
_TRAINING_ONLY_SUFFIXES = ("cluster_size", "embed_avg")


def codec_identity(spec: str | Path) -> str:
    """`sha256:<16 hex>` of what makes a checkpoint's codes, or the spec itself for a named codec."""
    path = Path(str(spec)).expanduser()
    weights = path / WEIGHTS_FILE
    if not (path.is_dir() and weights.is_file()):
        return str(spec)
    digest = hashlib.sha256()
    with safe_open(str(weights), framework="pt") as f:
        for name in sorted(f.keys()):
            if name.startswith(_DECODER_PREFIXES) or name.endswith(_TRAINING_ONLY_SUFFIXES):
                continue
            tensor = f.get_tensor(name).contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:16]}"
