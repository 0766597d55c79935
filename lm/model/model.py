"""`TTSModel`: the AR decoder + the NAR head. `forward` returns logits aligned with the labels of an
`LMBatch`; no loss and no sampling inside (see `lm/model/losses.py`, `lm/inference/generate.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from data_pipeline.records import TTSBatch
from lm.model.ar import ARDecoder
from lm.model.batch import LMBatch, build_lm_batch
from lm.model.config import ModelConfig
from lm.model.nar import NARHead
from lm.model.vocab import Vocab


@dataclass
class TTSOutput:
    """ar_logits [B, S, K+1] aligned with LMBatch.labels; nar_logits [B, F, K] aligned with
    LMBatch.nar.labels."""

    ar_logits: torch.Tensor
    nar_logits: torch.Tensor | None
    guided_attention: torch.Tensor | None = None  # [B, H, S, S] probs of the guided AR heads (training)
    delayed_logits: torch.Tensor | None = None  # [B, S, R, K] AR codebooks 2..R+1 (see delayed_labels)
    advance_logits: torch.Tensor | None = None  # [B, S] phone advance (alignment = "phoneme")


class TTSModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab = Vocab.from_config(config)
        self.ar = ARDecoder(config)
        # nothing for the NAR to fill when the AR predicts every codebook
        self.nar = NARHead(config) if config.num_codebooks > config.ar_codebooks else None

    def forward(
        self, batch: LMBatch, attention_layer: int | None = None, attention_heads: int = 0
    ) -> TTSOutput:
        """`attention_layer` / `attention_heads`: also return the attention probabilities of the first
        `attention_heads` heads of that AR layer (for the guided-attention loss)."""
        ar_logits, probs, delayed, advance = self.ar.forward_with_attention(
            batch.input_ids,
            batch.attention_mask,
            batch.position_ids,
            attention_layer,
            attention_heads,
            delayed_ids=batch.delayed_ids,
            phone_inputs=batch.phone_inputs,
        )
        nar_logits = self.nar(batch.nar) if self.nar is not None and batch.nar is not None else None
        return TTSOutput(
            ar_logits=ar_logits, nar_logits=nar_logits, guided_attention=probs, delayed_logits=delayed,
            advance_logits=advance,
        )

    def build_batch(
        self, batch: TTSBatch, continuation_prob: float = 0.25, generator: torch.Generator | None = None
    ) -> LMBatch:
        """Loader batch -> model batch (CPU); move it with `.to(device)`. See
        `lm.model.batch.build_lm_batch`."""
        return build_lm_batch(
            batch,
            self.vocab,
            self.config.num_codebooks,
            self.config.max_position_embeddings,
            continuation_prob=continuation_prob,
            generator=generator,
            ar_codebooks=self.config.ar_codebooks,
            phone_aligned=self.config.alignment == "phoneme",
        )

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every decoder layer's activations in backward (AR and NAR); trades ~30% compute for
        memory."""
        for llama in (self.ar.model, self.nar.model if self.nar is not None else None):
            if llama is None:
                continue
            # transformers >= 5.x names it activation_checkpointing_*; older versions gradient_checkpointing_*
            if enabled:
                enable = getattr(llama, "activation_checkpointing_enable", None)
                if enable is not None:
                    enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    llama.gradient_checkpointing_enable(
                        gradient_checkpointing_kwargs={"use_reentrant": False}
                    )
            else:
                getattr(llama, "activation_checkpointing_disable", llama.gradient_checkpointing_disable)()

    def num_parameters(self, part: str = "all") -> int:
        module = {"all": self, "ar": self.ar, "nar": self.nar}[part]
        return 0 if module is None else sum(p.numel() for p in module.parameters())
