"""The AR decoder's single token space: specials, then text pieces, then codebook-1 codes.

    [0, NUM_SPECIAL)                          specials (<pad> <bos> </text> <prompt> </prompt> <audio> <eos>,
        reserved)
    [text_offset, text_offset + text_vocab)   text pieces (sentencepiece ids shifted by text_offset)
    [audio_offset, audio_offset + K)          codebook-1 codes (shifted by audio_offset)

The AR code head does not predict over this whole space: it predicts K + 1 "head classes" (the K codes and
<eos>), because text and the other specials are never generated. `head class` <-> `token` mapping lives here.
Pure functions only; `lm/model/sequence.py` is the one caller that lays sequences out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPECIALS = ("<pad>", "<bos>", "</text>", "<prompt>", "</prompt>", "<audio>", "<eos>")
PAD, BOS, END_TEXT, PROMPT, END_PROMPT, AUDIO, EOS = range(len(SPECIALS))
NUM_SPECIAL = 16  # room for future specials without shifting text / code ids of trained models
IGNORE_INDEX = -100  # label value excluded from the loss (torch cross_entropy default)


@dataclass(frozen=True)
class Vocab:
    text_vocab_size: int
    codebook_size: int

    @classmethod
    def from_config(cls, config) -> Vocab:
        return cls(text_vocab_size=config.text_vocab_size, codebook_size=config.codebook_size)

    @property
    def text_offset(self) -> int:
        return NUM_SPECIAL

    @property
    def audio_offset(self) -> int:
        return NUM_SPECIAL + self.text_vocab_size

    @property
    def size(self) -> int:
        """Rows of the AR input embedding."""
        return self.audio_offset + self.codebook_size

    @property
    def eos_class(self) -> int:
        """Index of <eos> in the code head's output (after the K codes)."""
        return self.codebook_size

    @property
    def num_head_classes(self) -> int:
        return self.codebook_size + 1

    # -- text ---------------------------------------------------------------------------------------------
    def text_to_tokens(self, text_ids: torch.Tensor) -> torch.Tensor:
        return text_ids.long() + self.text_offset

    def tokens_to_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens - self.text_offset

    # -- codebook-1 codes ---------------------------------------------------------------------------------
    def codes_to_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.long() + self.audio_offset

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens - self.audio_offset

    def is_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens >= self.audio_offset) & (tokens < self.size)

    # -- code head classes (K codes + <eos>) --------------------------------------------------------------
    def head_class_to_token(self, classes: torch.Tensor) -> torch.Tensor:
        return torch.where(classes == self.eos_class, EOS, classes + self.audio_offset)

    def token_to_head_class(self, tokens: torch.Tensor) -> torch.Tensor:
        """Audio tokens -> code, <eos> -> eos_class, anything else -> IGNORE_INDEX."""
        cls = torch.where(self.is_audio(tokens), tokens - self.audio_offset, IGNORE_INDEX)
        return torch.where(tokens == EOS, self.eos_class, cls)

    def describe(self, token: int) -> str:
        """Human-readable name of one token (for debugging and error messages)."""
        if 0 <= token < len(SPECIALS):
            return SPECIALS[token]
        if token < NUM_SPECIAL:
            return f"<reserved{token}>"
        if token < self.audio_offset:
            return f"text:{token - self.text_offset}"
        if token < self.size:
            return f"c1:{token - self.audio_offset}"
        return f"<out-of-vocab {token}>"
