"""Model configuration: one dataclass for the AR decoder + NAR head, and named presets.

The config is saved next to every checkpoint / export (JSON), so generation never asks for model dimensions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields


@dataclass
class ModelConfig:
    """Dimensions of the codec-token TTS model.

    text_vocab_size:  text pieces from data_pipeline's sentencepiece model (ids 0..text_vocab_size-1, no
        specials)
    num_codebooks:    Q, codebooks per frame produced by the codec
    codebook_size:    K, codes per codebook
    ar_codebooks:     codebooks the AR predicts per frame (1 or 2). With 2 the AR also predicts codebook 2
        with a one-frame delay (MusicGen's delay pattern, see lm/model/sequence.py) and the NAR fills 3..Q.
        Why: on our own codec codebook 1 alone resynthesises at 84 % WER and codebooks 1+2 at 26 %, so a
        codebook-1 target holds little of what the text says and the AR learns to ignore the text.
    ar_*:             the Llama AR decoder over <specials, text pieces, codebook-1 codes>
    nar_*:            the bidirectional NAR head that fills codebooks ar_codebooks+1..Q
    alignment:        "none": the pure VALL-E layout, the model finds its alignment to the text itself (needs
        ~10^5 steps and ~10^6 utterances). "phoneme": every target frame's AR input also carries the phone
        sounding at that frame and the frame's place inside it (from the shards' alignments), the AR also
        predicts when to move on to the next phone (VALL-E R's phone advance), and the NAR sees each frame's
        phone; at inference a pointer walks the transcript's phones (lm/inference/phone_pointer.py).
    num_phones:       size of the phone inventory (data_pipeline/alignment/phones.py)
    max_phone_frames: in-phone positions with their own embedding (later frames share the last one)
    """

    text_vocab_size: int = 4096
    num_codebooks: int = 8
    codebook_size: int = 1024
    ar_codebooks: int = 1
    alignment: str = "none"
    num_phones: int = 42
    max_phone_frames: int = 32
    # AR decoder (transformers Llama)
    ar_hidden_size: int = 768
    ar_num_layers: int = 12
    ar_num_heads: int = 12
    ar_num_kv_heads: int = 4
    ar_intermediate_size: int = 2048
    # NAR head (Llama blocks, bidirectional attention)
    nar_hidden_size: int = 512
    nar_num_layers: int = 6
    nar_num_heads: int = 8
    nar_num_kv_heads: int = 4
    nar_intermediate_size: int = 1408
    # shared
    max_position_embeddings: int = 4096  # tokens: text + prompt frames + target frames must fit
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    dropout: float = 0.0  # attention dropout (training only)
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for prefix in ("ar", "nar"):
            hidden = getattr(self, f"{prefix}_hidden_size")
            heads = getattr(self, f"{prefix}_num_heads")
            kv_heads = getattr(self, f"{prefix}_num_kv_heads")
            if hidden % heads:
                raise ValueError(
                    f"{prefix}_hidden_size={hidden} is not divisible by {prefix}_num_heads={heads}"
                )
            if heads % kv_heads:
                raise ValueError(
                    f"{prefix}_num_heads={heads} is not divisible by {prefix}_num_kv_heads={kv_heads}"
                )
            if (hidden // heads) % 2:
                raise ValueError(f"{prefix} head dim {hidden // heads} must be even for RoPE")
        if self.num_codebooks < 1 or self.codebook_size < 2 or self.text_vocab_size < 1:
            raise ValueError(f"invalid token sizes in {self}")
        if self.alignment not in ("none", "phoneme"):
            raise ValueError(f"alignment={self.alignment!r}: must be 'none' or 'phoneme'")
        if self.alignment == "phoneme" and self.ar_codebooks > 1:
            # the pointer ends a row on its last frame, one step before that frame's delayed code is emitted
            raise ValueError("alignment='phoneme' works with ar_codebooks=1 only (for now)")
        # more than 2 would need extra decode steps after <eos> to flush the later delayed codebooks
        if self.ar_codebooks not in (1, 2) or self.ar_codebooks > self.num_codebooks:
            raise ValueError(
                f"ar_codebooks={self.ar_codebooks}: must be 1 or 2 and at most "
                f"num_codebooks={self.num_codebooks}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {unknown} (known: {sorted(known)})")
        return cls(**d)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # tests and CI: a few hundred thousand weights
    "tiny": ModelConfig(
        text_vocab_size=256,
        ar_hidden_size=64,
        ar_num_layers=2,
        ar_num_heads=4,
        ar_num_kv_heads=2,
        ar_intermediate_size=128,
        nar_hidden_size=64,
        nar_num_layers=2,
        nar_num_heads=4,
        nar_num_kv_heads=2,
        nar_intermediate_size=128,
        max_position_embeddings=4096,
    ),
    # ~10M total: the embedded default, trainable on a CPU in hours (AR ~5M + NAR ~4M, 4-8 codebooks)
    "mini": ModelConfig(
        text_vocab_size=512,
        ar_hidden_size=256,
        ar_num_layers=6,
        ar_num_heads=4,
        ar_num_kv_heads=4,
        ar_intermediate_size=704,
        nar_hidden_size=256,
        nar_num_layers=4,
        nar_num_heads=4,
        nar_num_kv_heads=4,
        nar_intermediate_size=704,
        max_position_embeddings=2048,
    ),
    # ~100M total (AR ~80M + NAR ~24M)
    "small": ModelConfig(),
    # ~400M total
    "medium": ModelConfig(
        ar_hidden_size=1024,
        ar_num_layers=24,
        ar_num_heads=16,
        ar_num_kv_heads=8,
        ar_intermediate_size=2816,
        nar_hidden_size=768,
        nar_num_layers=12,
        nar_num_heads=12,
        nar_num_kv_heads=4,
        nar_intermediate_size=2048,
    ),
    # ~1B total
    "large": ModelConfig(
        ar_hidden_size=1536,
        ar_num_layers=32,
        ar_num_heads=24,
        ar_num_kv_heads=8,
        ar_intermediate_size=4096,
        nar_hidden_size=1024,
        nar_num_layers=16,
        nar_num_heads=16,
        nar_num_kv_heads=8,
        nar_intermediate_size=2816,
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A named preset, optionally with field overrides (e.g. the tokenizer's text_vocab_size)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
