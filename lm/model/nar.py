"""The NAR head: fills codebooks 2..Q of the target, one bidirectional pass per codebook.

Input sequence per example (one `LlamaModel` with bidirectional attention, HF module names so peft LoRA
targets match the AR's):

    [ text pieces | prompt frames (sum of all Q codebook embeddings) | target frames (sum of codebooks < j) ]

plus a segment embedding (text / prompt / target) and a codebook-index ("stage") embedding for j on every
position. Output for every target frame: logits over codebook j, computed against codebook j's own input
embedding table (tied, as in VALL-E), so the head adds no parameters and each stage has its own classifier.

Segments are padded per batch (text to max L, prompt to max Fp), and padding is removed by the key mask;
RoPE positions count only real tokens, so a row's positions do not depend on the other rows of its batch.

Shape letters: B batch, L text, Q codebooks, Fp prompt frames, F target frames, K codebook size, N = L + Fp +
F.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaModel

from lm.model.ar import llama_config
from lm.model.batch import NARInputs
from lm.model.config import ModelConfig

TEXT, PROMPT, TARGET = range(3)


def _lengths_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]


class NARHead(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.nar_hidden_size
        # embed_tokens of this LlamaModel is the NAR's text-piece table (raw text ids, no specials).
        self.model = LlamaModel(
            llama_config(
                config.text_vocab_size,
                hidden,
                config.nar_num_layers,
                config.nar_num_heads,
                config.nar_num_kv_heads,
                config.nar_intermediate_size,
                config,
                pad_token_id=None,
            )
        )
        for layer in self.model.layers:
            layer.self_attn.is_causal = False  # never let SDPA fall back to a causal mask
        self.code_embed = nn.Embedding(config.num_codebooks * config.codebook_size, hidden)
        self.segment_embed = nn.Embedding(3, hidden)
        self.stage_embed = nn.Embedding(config.num_codebooks, hidden)
        # alignment = "phoneme": each target frame also gets its phone (codebook 1 says little of the words)
        self.phone_embed = nn.Embedding(config.num_phones, hidden) if config.alignment == "phoneme" else None
        for emb in (self.code_embed, self.segment_embed, self.stage_embed, self.phone_embed):
            if emb is not None:
                nn.init.normal_(emb.weight, std=config.initializer_range)

    def sum_codes(self, codes: torch.Tensor, num_used: torch.Tensor | int) -> torch.Tensor:
        """codes [B, Q, F] -> [B, F, hidden]: per row, the sum of the embeddings of codebooks q < num_used."""
        bsz, num_q, _ = codes.shape
        size = self.config.codebook_size
        num_used = torch.as_tensor(num_used, device=codes.device).expand(bsz)
        out = self.code_embed(codes[:, 0])  # codebook 1 is always used (num_used >= 1)
        # a loop over Q (<= 32) keeps memory at one [B, F, hidden] instead of [B, Q, F, hidden]
        for q in range(1, num_q):
            keep = (q < num_used).to(out.dtype)[:, None, None]
            out = out + self.code_embed(codes[:, q] + q * size) * keep
        return out

    def forward(self, inp: NARInputs) -> torch.Tensor:
        """-> logits [B, F, K] for codebook `inp.stage[b]` at every target frame.

        Weights are only read through module calls (no `.weight` indexing), so DeepSpeed ZeRO-3 gathers them.
        """
        text_len, prompt_len = inp.text_ids.shape[1], inp.prompt_codes.shape[2]
        q_model, size = self.config.num_codebooks, self.config.codebook_size
        if inp.prompt_codes.shape[1] != q_model or inp.target_codes.shape[1] != q_model:
            raise ValueError(
                f"NAR expects {q_model} codebooks, got prompt {tuple(inp.prompt_codes.shape)} and "
                f"target {tuple(inp.target_codes.shape)}"
            )
        seg = self.segment_embed(torch.arange(3, device=inp.stage.device))  # [3, hidden]
        target = self.sum_codes(inp.target_codes, inp.stage) + seg[TARGET]
        if self.phone_embed is not None:
            if inp.frame_phones is None:
                raise ValueError("this NAR is phone-aligned: NARInputs.frame_phones is required")
            phones = inp.frame_phones[:, : target.shape[1]]
            target = target + self.phone_embed(phones) * (phones > 0).unsqueeze(-1).to(target.dtype)
        x = torch.cat(
            [
                self.model.embed_tokens(inp.text_ids) + seg[TEXT],
                self.sum_codes(inp.prompt_codes, q_model) + seg[PROMPT],
                target,
            ],
            dim=1,
        )
        x = x + self.stage_embed(inp.stage)[:, None]
        valid = torch.cat(
            [
                _lengths_mask(inp.text_lengths, text_len),
                _lengths_mask(inp.prompt_lengths, prompt_len),
                _lengths_mask(inp.frame_lengths, inp.target_codes.shape[2]),
            ],
            dim=1,
        )  # [B, N]
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        # [B, 1, 1, N]: every query sees every real token (each row has >= 1 target frame, so no empty row)
        mask = valid[:, None, None, :]
        hidden = self.model(
            inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        target = hidden[:, text_len + prompt_len :]  # [B, F, hidden] (reused name: now the outputs)
        # the classifier for codebook j is codebook j's input table (tied): rows j*K .. j*K + K-1
        rows = inp.stage[:, None] * size + torch.arange(size, device=inp.stage.device)[None]
        return torch.einsum("bfd,bkd->bfk", target, self.code_embed(rows))
