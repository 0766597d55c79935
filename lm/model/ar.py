"""The AR decoder: a `transformers` Llama over the one token space + a code head (K codes + <eos>).

Two forward paths over the same weights (HF Llama module names and layout, so peft LoRA and HF tooling work):
  * `forward`: the stock `LlamaModel` (SDPA, activation checkpointing) for training and full recompute.
  * `forward_cached`: a lean path for generation over a static, preallocated KV cache owned by this module
    (gpt-fast style). HF's per-step Python overhead (mask factories, output capturing, dynamic cache) costs
    more than the matmuls on a CPU at batch 1; this path calls the same Linear / RMSNorm / MLP modules (so
    LoRA wrappers still apply) and only re-implements RoPE + attention against the cache.
The cache is written in place (`index_copy_`-style assignment), never grown with torch.cat.

Shape letters: B batch, T new tokens, S cache slots, D head dim, H heads, V code-head classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel

from lm.model.config import ModelConfig
from lm.model.vocab import BOS, EOS, PAD, Vocab


def llama_config(
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    config: ModelConfig,
    pad_token_id: int | None,
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        attention_dropout=config.dropout,
        initializer_range=config.initializer_range,
        pad_token_id=pad_token_id,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=False,
        use_cache=False,
        attn_implementation="sdpa",
        hidden_act="silu",  # forward_cached uses F.silu
    )


class KVCache(nn.Module):
    """Static per-layer cache [B, H_kv, S, D]; buffers are non-persistent, so they never reach a
    checkpoint."""

    def __init__(
        self,
        batch_size: int,
        kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        super().__init__()
        shape = (batch_size, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bsz = k.shape[0]
        self.k[:bsz, :, input_pos] = k
        self.v[:bsz, :, input_pos] = v
        return self.k[:bsz], self.v[:bsz]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class ARDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab = Vocab.from_config(config)
        self.model = LlamaModel(
            llama_config(
                self.vocab.size,
                config.ar_hidden_size,
                config.ar_num_layers,
                config.ar_num_heads,
                config.ar_num_kv_heads,
                config.ar_intermediate_size,
                config,
                pad_token_id=PAD,
            )
        )
        self.code_head = nn.Linear(config.ar_hidden_size, self.vocab.num_head_classes, bias=False)
        nn.init.normal_(self.code_head.weight, std=config.initializer_range)
        # ar_codebooks > 1: codebooks 2.. ride on the codebook-1 token stream with a delay
        # (lm/model/sequence.py); each has its own input table (summed into the token's embedding) and its own
        # head
        delayed = config.ar_codebooks - 1
        self.delayed_embeds = nn.ModuleList(
            nn.Embedding(config.codebook_size, config.ar_hidden_size) for _ in range(delayed)
        )
        self.delayed_heads = nn.ModuleList(
            nn.Linear(config.ar_hidden_size, config.codebook_size, bias=False) for _ in range(delayed)
        )
        for module in (*self.delayed_embeds, *self.delayed_heads):
            nn.init.normal_(module.weight, std=config.initializer_range)
        # alignment = "phoneme": the phone sounding at the frame a slot predicts, and where that frame sits in
        # it, are added to the slot's embedding; a head predicts whether that frame is the phone's last
        self.phone_embed = self.phone_pos_embed = self.advance_head = None
        if config.alignment == "phoneme":
            self.phone_embed = nn.Embedding(config.num_phones, config.ar_hidden_size)
            self.phone_pos_embed = nn.Embedding(config.max_phone_frames, config.ar_hidden_size)
            self.advance_head = nn.Linear(config.ar_hidden_size, 1)
            for module in (self.phone_embed, self.phone_pos_embed, self.advance_head):
                nn.init.normal_(module.weight, std=config.initializer_range)
            nn.init.zeros_(self.advance_head.bias)
        self.head_dim = config.ar_hidden_size // config.ar_num_heads
        self.kv_caches: nn.ModuleList | None = None

    # -- training / full recompute (stock HF path) -----------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        delayed_ids: torch.Tensor | None = None,
        phone_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, S] (+ delayed_ids [B, S, R], NO_CODE = -1 where a slot carries none; + phone_inputs
        [B, S, 2]: phone id (0 = none: adds nothing) and in-phone frame index) -> [B, S, hidden]."""
        x = self.model.embed_tokens(input_ids)
        if phone_inputs is not None and self.phone_embed is not None:
            phone, pos = phone_inputs[..., 0], phone_inputs[..., 1]
            keep = (phone > 0).unsqueeze(-1).to(x.dtype)
            pos = pos.clamp(0, self.config.max_phone_frames - 1)
            x = x + (self.phone_embed(phone) + self.phone_pos_embed(pos)) * keep
        if delayed_ids is None:
            return x
        for r, table in enumerate(self.delayed_embeds):
            ids = delayed_ids[..., r]
            x = x + table(ids.clamp(min=0)) * (ids >= 0).unsqueeze(-1).to(x.dtype)
        return x

    def advance_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """hidden [..., hidden] -> [...] logit that the frame this slot predicts is its phone's last
        (None: alignment = "none")."""
        if self.advance_head is None:
            return None
        return self.advance_head(hidden).squeeze(-1)

    def delayed_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """hidden [..., hidden] -> logits [..., R, K] of the delayed codebooks (None: ar_codebooks = 1)."""
        if not len(self.delayed_heads):
            return None
        return torch.stack([head(hidden) for head in self.delayed_heads], dim=-2)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        delayed_ids: torch.Tensor | None = None,
        phone_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, S] -> code-head logits [B, S, V]; attention_mask [B, S] (padding) or [B, 1, S, S]
        bool."""
        out = self.forward_with_attention(input_ids, attention_mask, position_ids, delayed_ids=delayed_ids,
                                          phone_inputs=phone_inputs)
        return out[0]

    def forward_with_attention(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_layer: int | None = None,
        attention_heads: int = 0,
        delayed_ids: torch.Tensor | None = None,
        phone_inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """-> (code-head logits [B, S, V], attention probabilities, delayed-codebook logits [B, S, R, K] or
        None, phone-advance logits [B, S] or None). The probabilities [B, attention_heads, S, S] are those of
        the first `attention_heads` heads of
        layer `attention_layer` (None: no probabilities, the plain forward).

        SDPA never materialises its probabilities, so they are recomputed from that layer's input with the
        layer's own projections and RoPE: the same numbers, and gradients reach the same weights (the
        guided-attention loss in `lm/model/losses.py` trains them)."""
        want = attention_layer is not None and attention_heads > 0
        out = self.model(
            inputs_embeds=self.embed(input_ids, delayed_ids, phone_inputs),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=want,
        )
        logits = self.code_head(out.last_hidden_state)
        delayed = self.delayed_logits(out.last_hidden_state)
        advance = self.advance_logits(out.last_hidden_state)
        if not want:
            return logits, None, delayed, advance
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(
                input_ids
            )
        probs = self._attention_probs(
            out.hidden_states[attention_layer], attention_layer, attention_heads, position_ids, attention_mask
        )
        return logits, probs, delayed, advance

    def _attention_probs(
        self,
        layer_input: torch.Tensor,
        layer_index: int,
        num_heads: int,
        position_ids: torch.Tensor,
        key_padding: torch.Tensor | None,
    ) -> torch.Tensor:
        layer = self.model.layers[layer_index]
        attn = layer.self_attn
        bsz, seq, _ = layer_input.shape
        heads, kv_heads, dim = self.config.ar_num_heads, self.config.ar_num_kv_heads, self.head_dim
        h = layer.input_layernorm(layer_input)
        q = attn.q_proj(h).view(bsz, seq, heads, dim).transpose(1, 2)[:, :num_heads]
        k = attn.k_proj(h).view(bsz, seq, kv_heads, dim).transpose(1, 2)
        k = k.repeat_interleave(heads // kv_heads, dim=1)[:, :num_heads]  # query head i reads kv head i // G
        cos, sin = self.model.rotary_emb(h, position_ids)
        cos, sin = cos[:, None], sin[:, None]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * attn.scaling
        allowed = torch.ones(seq, seq, dtype=torch.bool, device=h.device).tril()[None, None]
        if key_padding is not None and key_padding.dim() == 2:
            allowed = allowed & key_padding.bool()[:, None, None, :]
        # padded query rows keep their own slot so no row is all -inf (they are masked out of the loss)
        allowed = allowed | torch.eye(seq, dtype=torch.bool, device=h.device)[None, None]
        return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)

    # -- generation over the static cache --------------------------------------------------------------------
    def setup_cache(self, max_batch_size: int, max_seq_len: int, dtype: torch.dtype | None = None) -> None:
        """Preallocate the KV cache (reused when it is already large enough) and the RoPE tables."""
        if max_seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"generation needs {max_seq_len} positions but the model was built for "
                f"max_position_embeddings={self.config.max_position_embeddings}"
            )
        weight = self.code_head.weight
        dtype = dtype or weight.dtype
        cache = self.kv_caches[0] if self.kv_caches is not None else None
        if (
            cache is not None
            and cache.k.shape[0] >= max_batch_size
            and cache.k.shape[2] >= max_seq_len
            and cache.k.dtype == dtype
            and cache.k.device == weight.device
        ):
            return
        self.kv_caches = nn.ModuleList(
            KVCache(
                max_batch_size, self.config.ar_num_kv_heads, max_seq_len, self.head_dim, dtype, weight.device
            )
            for _ in self.model.layers
        )
        # RoPE tables computed exactly like LlamaRotaryEmbedding (fp32 freqs, then cast), indexed per step.
        inv_freq = self.model.rotary_emb.inv_freq.float()
        freqs = torch.arange(max_seq_len, device=weight.device, dtype=torch.float32)[:, None] * inv_freq[None]
        emb = torch.cat((freqs, freqs), dim=-1) * self.model.rotary_emb.attention_scaling
        self.register_buffer("rope_cos", emb.cos().to(dtype), persistent=False)
        self.register_buffer("rope_sin", emb.sin().to(dtype), persistent=False)

    def free_cache(self) -> None:
        self.kv_caches = None

    @property
    def cache_len(self) -> int:
        return 0 if self.kv_caches is None else self.kv_caches[0].k.shape[2]

    def forward_cached(
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor,
        rope_pos: torch.Tensor,
        mask: torch.Tensor,
        kv_len: int | None = None,
        delayed_ids: torch.Tensor | None = None,
        phone_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run T new tokens against the cache and write their K/V into slots `input_pos`.

        tokens [B, T] (+ delayed_ids [B, T, R]); input_pos [T] cache slots; rope_pos [B, T] RoPE positions
        (slot minus left padding); mask [B, 1, T, S'] bool (True = attend) over the first S' = kv_len slots
        (all slots when kv_len is None). Returns hidden states after the final norm [B, T, hidden].
        """
        if self.kv_caches is None:
            raise RuntimeError("call setup_cache() before forward_cached()")
        x = self.embed(tokens, delayed_ids, phone_inputs)
        cos, sin = self.rope_cos[rope_pos][:, None], self.rope_sin[rope_pos][:, None]  # [B, 1, T, D]
        shape, eps = (x.shape[-1],), self.config.rms_norm_eps
        # F.rms_norm / F.silu equal LlamaRMSNorm / LlamaMLP bit for bit (tested) with fewer Python-level ops;
        # the Linear modules are still called as modules, so LoRA wrappers apply.
        for layer, cache in zip(self.model.layers, self.kv_caches, strict=True):
            h = F.rms_norm(x, shape, layer.input_layernorm.weight, eps)
            x = x + self._attention(layer.self_attn, h, cos, sin, cache, input_pos, mask, kv_len)
            h = F.rms_norm(x, shape, layer.post_attention_layernorm.weight, eps)
            mlp = layer.mlp
            x = x + mlp.down_proj(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        return F.rms_norm(x, shape, self.model.norm.weight, eps)

    def _attention(
        self,
        attn: nn.Module,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache,
        input_pos: torch.Tensor,
        mask: torch.Tensor,
        kv_len: int | None,
    ) -> torch.Tensor:
        bsz, seq, _ = x.shape
        heads, kv_heads, dim = self.config.ar_num_heads, self.config.ar_num_kv_heads, self.head_dim
        q = attn.q_proj(x).view(bsz, seq, heads, dim).transpose(1, 2)
        k = attn.k_proj(x).view(bsz, seq, kv_heads, dim).transpose(1, 2)
        v = attn.v_proj(x).view(bsz, seq, kv_heads, dim).transpose(1, 2)
        qk = torch.cat([q, k], dim=1)  # one RoPE for both (fewer ops per step)
        q, k = (qk * cos + rotate_half(qk) * sin).split([heads, kv_heads], dim=1)
        keys, values = cache.update(input_pos, k, v)
        if kv_len is not None:
            keys, values = keys[:, :, :kv_len], values[:, :, :kv_len]
        if seq == 1:
            # decode: fold the query heads of each KV group into the "sequence" axis, so attention reads every
            # cached key once instead of materialising repeat_kv copies ([B, H_kv, G, D] x [B, H_kv, S, D]).
            q = q.reshape(bsz, kv_heads, heads // kv_heads, dim)
            if x.device.type == "cpu":
                # two small matmuls + a softmax (which torch.compile fuses): SDPA's CPU flash kernel costs
                # more per call than this whole attention (~8 % of a compiled ~100M-preset step, measured by
                # scripts/bench_generate.py); the mask always keeps the current slot, so no row is empty
                scores = torch.matmul(q, keys.transpose(-1, -2)) * attn.scaling
                out = torch.matmul(scores.masked_fill(~mask, float("-inf")).softmax(dim=-1), values)
            else:
                out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling)
            out = out.reshape(bsz, heads, 1, dim)
        else:
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=attn.scaling, enable_gqa=heads != kv_heads
            )
        return attn.o_proj(out.transpose(1, 2).reshape(bsz, seq, heads * dim))
