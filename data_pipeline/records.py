"""The on-disk shard schema, in one place.

Raw shards (from ingest):    {key}.flac  + {key}.json  (RawMeta)
Token shards (from tokenize): {key}.codes.npy (int16/int32 [Q, F]) + {key}.json (TokenMeta)
Both may carry {key}.align.json: the clip's phone alignment (data_pipeline/alignment/schema.py); in a
token shard it also has the frames per phone at the codec's frame rate (`frame_durations`).

Shape letters: B batch, Q codebooks, F frames, L text tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

AUDIO_EXT = "flac"
CODES_EXT = "codes.npy"
META_EXT = "json"
ALIGN_EXT = "align.json"
REJECTS_FILE = "rejects.jsonl"
RAW_SHARD_PATTERN = "raw-%06d.tar"
TOKEN_SHARD_SUFFIX = ".tar"


@dataclass
class RawMeta:
    """Metadata stored next to every audio clip in a raw shard."""

    text: str
    speaker: str
    duration: float  # seconds
    sample_rate: int
    source: str  # original file path or URL, for tracing a bad clip back

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TokenMeta(RawMeta):
    """Metadata stored next to every code array in a token shard."""

    codec: str = ""  # the codec spec used to tokenize
    frame_rate: float = 0.0
    num_frames: int = 0
    num_codebooks: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class TTSBatch:
    """A padded training batch. Padding positions hold 0 and are excluded by the lengths.

    text_ids:       [B, L] int64 text-piece ids from data_pipeline.text.tokenizer.TextTokenizer (no specials)
    text_lengths:   [B]
    codes:          [B, Q, F] target codes
    frame_lengths:  [B]
    prompt_codes:   [B, Q, Fp] codes of another utterance of the same speaker (or a crop)
    prompt_lengths: [B]
    prompt_is_crop: [B] bool, True where the prompt is a crop of the target itself (no other
                    utterance of the speaker was available); None when the producer does not say
    prompt_keys:    key of the utterance each prompt was cut from
    texts:          the transcripts, for logging and sample generation
    With phone alignments in the shards (else None):
    phone_ids:       [B, P] canonical phone ids of each target (data_pipeline/alignment/phones.py), 0-padded
    phone_durations: [B, P] frames per phone; row i sums to frame_lengths[i]
    phone_lengths:   [B] phones per row (0 for a row without an alignment)
    frame_phones:    [B, F] the phone sounding at each target frame (0 = none / padding)
    prompt_phones:   [B, Fp] the same for the prompt's frames
    """

    keys: list[str]
    speakers: list[str]
    text_ids: torch.Tensor
    text_lengths: torch.Tensor
    codes: torch.Tensor
    frame_lengths: torch.Tensor
    prompt_codes: torch.Tensor
    prompt_lengths: torch.Tensor
    prompt_is_crop: torch.Tensor | None = None
    prompt_keys: list[str] | None = None
    texts: list[str] | None = None
    phone_ids: torch.Tensor | None = None
    phone_durations: torch.Tensor | None = None
    phone_lengths: torch.Tensor | None = None
    frame_phones: torch.Tensor | None = None
    prompt_phones: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TTSBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return TTSBatch(**moved)

    @property
    def num_frames(self) -> int:
        return int(self.frame_lengths.sum())
