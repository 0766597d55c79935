"""The two forward steps of generation, gpt-fast style, over the static KV cache owned by the AR decoder:

  prefill(ar, tokens, pads)                   -> (code-head logits, delayed-codebook logits or None, phone
                                                 advance logit or None) of the last prefix position
  decode_one_token(ar, token, input_pos, pads) -> the same for the next position (the only compile target)

plus how the step is compiled (`decode_fn`), how large a cache to allocate (`cache_slots`), the CPU weight
layout that speeds up batch-1 steps (`cpu_decode_layout`) and the no-cache reference (`recompute_logits`).
The loop that drives them is lm/inference/ar_loop.py.

Shape letters: B batch, P prefix tokens, S cache slots, V code-head classes (K codes + <eos>).
"""

from __future__ import annotations

import torch

from lm.model.ar import ARDecoder


# -- the two forward steps -----------------------------------------------------------------------------------
def prefix_mask(pads: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prefix of `length` slots -> (mask [B, 1, P, P] bool, RoPE positions [B, P]).

    Causal over real tokens; a pad query may see itself, so no softmax row is empty (an empty row is NaN, and
    NaN values in the cache poison later steps even under a zero attention weight).
    """
    slots = torch.arange(length, device=pads.device)
    causal = slots[None, :] <= slots[:, None]  # [P(query), P(key)]
    real_key = slots[None, None, :] >= pads[:, None, None]  # [B, 1, P]
    mask = (causal[None] & real_key) | torch.eye(length, dtype=torch.bool, device=pads.device)[None]
    return mask[:, None], (slots[None] - pads[:, None]).clamp(min=0)


def _heads(
    ar: ARDecoder, hidden: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Last position's hidden [B, hidden] -> (code-head logits [B, V], delayed-codebook logits [B, R, K] or
    None, phone-advance logits [B] or None)."""
    delayed = ar.delayed_logits(hidden)
    advance = ar.advance_logits(hidden)
    return (ar.code_head(hidden).float(), delayed.float() if delayed is not None else None,
            advance.float() if advance is not None else None)


def prefill(
    ar: ARDecoder,
    tokens: torch.Tensor,
    pads: torch.Tensor,
    delayed_ids: torch.Tensor | None = None,
    phone_inputs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """tokens [B, P] left-padded (+ delayed_ids [B, P, R], phone_inputs [B, P, 2]), pads [B] -> the logits
    of the last position (see `_heads`); fills cache slots 0..P-1."""
    length = tokens.shape[1]
    mask, rope_pos = prefix_mask(pads, length)
    slots = torch.arange(length, device=tokens.device)
    hidden = ar.forward_cached(tokens, slots, rope_pos, mask, kv_len=length, delayed_ids=delayed_ids,
                               phone_inputs=phone_inputs)
    return _heads(ar, hidden[:, -1])


def decode_one_token(
    ar: ARDecoder,
    token: torch.Tensor,
    input_pos: torch.Tensor,
    pads: torch.Tensor,
    kv_len: int | None = None,
    delayed_ids: torch.Tensor | None = None,
    phone_inputs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """token [B, 1] (+ delayed_ids [B, 1, R], phone_inputs [B, 1, 2]) written at cache slot input_pos [1] ->
    logits (see `_heads`).

    kv_len=None attends over the whole static cache (fixed shapes: what torch.compile / CUDA graphs want);
    an int attends over the first kv_len slots only (eager CPU: no time spent on empty slots).
    """
    width = ar.cache_len if kv_len is None else kv_len
    slots = torch.arange(width, device=token.device)
    mask = (slots[None] >= pads[:, None]) & (slots[None] <= input_pos)  # [B, S]
    rope_pos = input_pos[None] - pads[:, None]  # [B, 1]
    hidden = ar.forward_cached(
        token, input_pos, rope_pos, mask[:, None, None], kv_len=kv_len, delayed_ids=delayed_ids,
        phone_inputs=phone_inputs,
    )
    return _heads(ar, hidden[:, -1])


_compiled_decode: dict[str, object] = {}


def static_decode_shapes(compile_step: bool, device: torch.device) -> bool:
    """Whether the decode step attends over the whole cache (fixed shapes for CUDA graphs) rather than the
    filled prefix only. Only the compiled GPU step wants that; on the CPU a compiled step keeps kv_len as a
    dynamic size, since attention over empty slots would cost real memory traffic per step."""
    return compile_step and device.type == "cuda"


def decode_fn(compile_step: bool, device: torch.device):
    """decode_one_token, compiled once per device type when asked: CUDA graphs over static shapes on GPU,
    inductor's fused C++ kernels with a dynamic kv_len on CPU (fewer, fused ops around the matrix-vector
    products; the first call compiles for about a minute)."""
    if not compile_step:
        return decode_one_token
    if device.type not in _compiled_decode:
        if device.type == "cuda":
            fn = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)
        else:
            fn = torch.compile(decode_one_token, dynamic=True, fullgraph=True)
        _compiled_decode[device.type] = fn
    return _compiled_decode[device.type]


def cache_slots(needed: int, compile_step: bool, limit: int, bucket: int = 1024) -> int:
    """Cache length to allocate. A compiled step is specialised on the cache tensors, so a new cache means
    a recompile (about a minute on a CPU): round up to a bucket so utterances of similar length reuse one
    cache (setup_cache keeps a large enough cache) instead of recompiling per length."""
    if not compile_step:
        return needed
    return max(needed, min(-(-needed // bucket) * bucket, limit))


def cpu_decode_layout(ar: ARDecoder) -> None:
    """Keep every wide Linear weight (out_features > in_features: the MLP's gate/up projections, the code
    head) in column-major memory on the CPU. Values, shapes and parameter objects stay the same (only strides
    change), so LoRA wrappers, optimizers and `lm.checkpoint.save_model` (which saves `.contiguous()`) are
    unaffected. Why: at batch 1 every step is a matrix-vector product per Linear, and MKL reads a wide
    [out, in] weight ~10-30 % faster when `x @ W.T` needs no transpose (measured by scripts/bench_generate.py
    on an AVX2 EPYC). Idempotent. Left alone: a weight that is a view into a larger buffer (DeepSpeed
    ZeRO-1/2 keeps trainable parameters as views into its flat buffer; new storage would detach them from
    the optimizer) and ZeRO-3 partitioned parameters."""
    for module in ar.modules():
        if not isinstance(module, torch.nn.Linear) or module.out_features <= module.in_features:
            continue
        weight = module.weight
        if weight.device.type != "cpu" or hasattr(weight, "ds_id") or weight.t().is_contiguous():
            continue
        if weight.untyped_storage().nbytes() != weight.numel() * weight.element_size():
            continue  # a view into a larger buffer
        # outside inference mode: the new storage must stay usable by autograd (training after generation)
        with torch.inference_mode(False), torch.no_grad():
            weight.data = weight.data.t().contiguous().t()


def recompute_logits(
    ar: ARDecoder,
    tokens: torch.Tensor,
    pads: torch.Tensor,
    delayed_ids: torch.Tensor | None = None,
    phone_inputs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """No cache: the training forward over all of tokens [B, T] (left-padded) -> the logits of the last
    position, as `prefill` returns them (the baseline the KV cache is measured against, and the reference it
    is tested against)."""
    mask, rope_pos = prefix_mask(pads, tokens.shape[1])
    logits, _, delayed, advance = ar.forward_with_attention(tokens, mask, rope_pos, delayed_ids=delayed_ids,
                                                            phone_inputs=phone_inputs)
    return (logits[:, -1].float(), delayed[:, -1].float() if delayed is not None else None,
            advance[:, -1].float() if advance is not None else None)
