"""Generation, gpt-fast style: prefill once, then one token a step against the static KV cache owned by the AR
decoder; then one NAR pass per codebook the AR does not predict.

  prefill(ar, tokens, pads)                   -> (code-head logits, delayed-codebook logits or None, phone
                                                 advance logit or None) of the last prefix position
  decode_one_token(ar, token, input_pos, pads) -> the same for the next position (the only compile target)
  generate_ar(model, prompts, text_lengths, ...) batched rows that stop independently (`finished` masks), a
                                              length guard tied to the text length, a minimum length
  generate_nar(model, ...)                    codebooks ar_codebooks+1..Q, one bidirectional pass each
  generate(model, requests, ...)              both, from `TTSRequest`s (what the Synthesizer calls)

Rows of a batch are left-padded so they all end at the same cache slot; each row's RoPE positions start at 0
at its first real token, so a row generates the same tokens alone or in a batch (tested).

Shape letters: B batch, P prefix tokens, S cache slots, V code-head classes (K codes + <eos>), Q codebooks, F
frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from tqdm import tqdm

from lm.inference.guidance import conditioned, doubled, guided, unconditioned_prefix
from lm.inference.phone_pointer import advance_phones, given_durations, phone_setup
from lm.inference.sampling import apply_repetition_penalty, as_row_tensor, sample
from lm.model.ar import ARDecoder
from lm.model.model import TTSModel
from lm.model.sequence import (
    NO_CODE,
    inference_delayed,
    inference_prompt,
    nar_inputs,
    pad_left,
    prefix_phone_inputs,
)

log = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    """Decoding knobs. temperature / top_k / top_p / repetition_penalty may be per-row lists."""

    temperature: float | list[float] = 1.0  # <= 0: greedy
    top_k: int | list[int] = 0  # <= 0: off
    top_p: float | list[float] = 1.0  # >= 1: off
    repetition_penalty: float | list[float] = 1.0  # 1: off
    repetition_window: int = 16  # penalise codes seen in the last N frames (0: the whole output so far)
    max_new_frames: int = 1500  # absolute cap (20 s at 75 Hz)
    # length guard tied to the text: a row is stopped (and flagged) after
    # ceil(max_frames_per_text_token * text_len) + guard_slack_frames frames.
    max_frames_per_text_token: float = 40.0
    guard_slack_frames: int = 75
    # <eos> is impossible before max(min_new_frames, min_frames_per_text_token * text_len) frames
    min_new_frames: int = 1
    min_frames_per_text_token: float = 0.0
    nar_temperature: float = 0.0  # NAR passes are greedy by default (as in VALL-E)
    max_phone_frames: int = 40  # phone-aligned models: a phone held this many frames is left
    # phone-aligned models, sampled rows: "sample" draws each frame's advance from the head; "median" ends
    # every phone at its median length, as greedy rows always do (the codes are still sampled)
    phone_durations: str = "sample"
    # phone-aligned models: classifier-free guidance on the target phones (lm/inference/guidance.py); 1: off
    phone_guidance: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> SamplingConfig:
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown sampling keys {sorted(set(d) - known)}")
        return cls(**d)

    def __post_init__(self) -> None:
        if self.phone_durations not in ("sample", "median"):
            raise ValueError(f"phone_durations must be 'sample' or 'median', got {self.phone_durations!r}")
        if not self.phone_guidance > 0:
            raise ValueError(f"phone_guidance must be > 0 (1: off), got {self.phone_guidance}")


@dataclass
class ARResult:
    codes: torch.Tensor  # [B, F] codebook-1 codes, 0 past each length
    lengths: torch.Tensor  # [B] frames before <eos>
    hit_length_guard: torch.Tensor  # [B] bool: stopped by the guard, not by <eos>
    steps: int  # decode steps run (the longest row)
    delayed_codes: torch.Tensor | None = None  # [B, R, F] codebooks 2..R+1 (ar_codebooks > 1), 0 past lengths
    frame_phones: torch.Tensor | None = None  # [B, F] the phone each frame was generated for (phone mode)


@dataclass
class ARStep:
    """What `generate_ar`'s `on_step` callback sees after decode step `step`: the loop's own buffers (read
    them, do not keep or modify them). A row that is not finished has `complete_frames()` frames whose AR
    codes are final; a finished row has `lengths[b]`."""

    step: int
    codes: torch.Tensor  # [B, max_steps] codebook-1 codes (0 past each row's end)
    delayed_codes: torch.Tensor | None  # [B, R, max_steps] (ar_codebooks > 1)
    frame_phones: torch.Tensor | None  # [B, max_steps] (phone-aligned models)
    lengths: torch.Tensor  # [B] frames of the finished rows
    finished: torch.Tensor  # [B] bool
    hit_length_guard: torch.Tensor  # [B] bool: a finished row was stopped by the guard, not by <eos>

    def complete_frames(self) -> int:
        """Frames with all AR codebooks of an unfinished row: a delayed codebook's code for frame t arrives
        one step after it."""
        return self.step + 1 - (0 if self.delayed_codes is None else self.delayed_codes.shape[1])


# on_step(view) -> None, or a [B] bool tensor of rows to stop now (a caller that no longer wants them)
StepCallback = Callable[[ARStep], torch.Tensor | None]


def frame_limits(text_lengths: torch.Tensor, sampling: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] target text lengths -> (min_frames [B], guard_frames [B])."""
    text = text_lengths.double().clamp(min=1)
    guard = (text * sampling.max_frames_per_text_token).ceil().long() + sampling.guard_slack_frames
    guard = guard.clamp(max=sampling.max_new_frames)
    min_len = (
        (text * sampling.min_frames_per_text_token).floor().long().clamp(min=max(sampling.min_new_frames, 1))
    )
    guard = torch.maximum(guard, min_len)
    return min_len, guard


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


def _check_delayed(
    prompts: list[torch.Tensor], prefixes: list[torch.Tensor], first: torch.Tensor, num_delayed: int
) -> None:
    """A delayed prefix of another length than its prompt would put codes on the wrong slots silently."""
    if len(prefixes) != len(prompts) or tuple(first.shape) != (len(prompts), num_delayed):
        raise ValueError(f"{len(prompts)} prompts need {len(prompts)} delayed prefixes and first_delayed "
                         f"[{len(prompts)}, {num_delayed}], got {len(prefixes)} and {tuple(first.shape)}")
    for b, (prompt, prefix) in enumerate(zip(prompts, prefixes, strict=True)):
        if tuple(prefix.shape) != (prompt.numel(), num_delayed):
            raise ValueError(f"row {b}: delayed prefix {tuple(prefix.shape)} does not fit its prompt of "
                             f"{prompt.numel()} tokens (lm.model.sequence.inference_delayed makes both)")


# -- AR loop -------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_ar(
    model: TTSModel,
    prompts: list[torch.Tensor],
    text_lengths: torch.Tensor,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile_step: bool = False,
    progress: bool = False,
    delayed_prefixes: list[torch.Tensor] | None = None,
    first_delayed: torch.Tensor | None = None,
    phone_seqs: list[torch.Tensor] | None = None,
    prefix_phones: list[torch.Tensor] | None = None,
    on_step: StepCallback | None = None,
    phone_durations: list[torch.Tensor | None] | None = None,
) -> ARResult:
    """Generate codebook 1 (and, when ar_codebooks > 1, the delayed codebooks) for a batch of AR prefixes
    (from `lm.model.sequence.inference_prompt`).

    text_lengths [B]: target text pieces per row (drives the length guard and minimum length).
    delayed_prefixes [P_b, R] / first_delayed [B, R]: the prefixes' delayed codes and those that ride on the
    first generated token (`lm.model.sequence.inference_delayed`); required when ar_codebooks > 1.
    use_cache=False recomputes the whole sequence every step (the baseline the KV cache is measured against).
    compile_step=True compiles `decode_one_token` (GPU: static shapes over the whole cache and CUDA graphs;
    CPU: fused kernels with a dynamic kv_len, see `decode_fn`).
    phone_seqs [P_b] / prefix_phones [len(prompt_b), 2]: a phone-aligned model's target phones and the phone
    inputs of its prefix (`lm.model.sequence.prefix_phone_inputs`). A pointer walks each row's phones: every
    slot reads the current phone and the frame's index inside it, the advance head moves the pointer on, and
    the row ends with the frame that leaves its last phone (no <eos>). phone_durations [P_b] (or None per
    row): frames per phone to hold instead of asking the advance head (given timings, or an oracle for
    `scripts/diagnose_stages.py`).
    sampling.phone_guidance != 1 runs every row a second time without its target phones and samples from
    the guided logits (lm/inference/guidance.py): twice the batch for the model, the same rows out.
    on_step: called after every step with an `ARStep` (streaming synthesis reads the frames made so far);
    the rows of the [B] bool tensor it may return stop there, as if finished (their output is cut short).
    """
    sampling = sampling or SamplingConfig()
    ar, vocab = model.ar, model.vocab
    device = ar.code_head.weight.device
    bsz = len(prompts)
    tokens, pads = pad_left([p.to("cpu") for p in prompts])
    tokens, pads = tokens.to(device), pads.to(device)
    prefix_len = tokens.shape[1]
    num_delayed = ar.config.ar_codebooks - 1
    delayed_ids = None
    if num_delayed:
        if delayed_prefixes is None or first_delayed is None:
            raise ValueError("this model predicts delayed codebooks: pass delayed_prefixes and first_delayed")
        _check_delayed(prompts, delayed_prefixes, first_delayed, num_delayed)
        delayed_ids = torch.full((bsz, prefix_len, num_delayed), NO_CODE, dtype=torch.long)
        for b, d in enumerate(delayed_prefixes):
            delayed_ids[b, prefix_len - d.shape[0] :] = d.cpu()
        delayed_ids, pending = delayed_ids.to(device), first_delayed.to(device).long()
    phone_mode = ar.advance_head is not None
    phone_ids = None
    if phone_mode:
        phone_ids, phone_lengths, phone_inputs = phone_setup(prompts, phone_seqs, prefix_phones, prefix_len)
        phone_ids, phone_lengths = phone_ids.to(device), phone_lengths.to(device)
        phone_inputs = phone_inputs.to(device)
        pointer = torch.zeros(bsz, dtype=torch.long, device=device)
        in_phone = torch.zeros(bsz, dtype=torch.long, device=device)
        stay = torch.ones(bsz, device=device)  # greedy rows: P(the phone lasts past this frame)
        rows = torch.arange(bsz, device=device)
        given_rows, given = given_durations(phone_durations, bsz, phone_ids.shape[1], device)
    else:
        phone_inputs = None
    guide = sampling.phone_guidance != 1.0
    if guide and not phone_mode:
        raise ValueError("phone_guidance needs a phone-aligned model (model.alignment: phoneme)")

    def model_rows(x: torch.Tensor | None, uncond: torch.Tensor | None = None) -> torch.Tensor | None:
        """What the model reads: the rows, then (guidance) their unconditioned twins."""
        return doubled(x, uncond) if guide else x

    def heads(out: tuple) -> tuple:
        """The model's logits -> the rows' (guided) code and delayed logits and the advance logits."""
        if not guide:
            return out
        code, delayed, advance = out
        scale = sampling.phone_guidance
        return guided(code, scale), guided(delayed, scale), conditioned(advance)

    min_len, guard = (t.to(device) for t in frame_limits(text_lengths.cpu(), sampling))
    max_steps = int(guard.max()) + 1  # +1: the step that emits the forced <eos>

    row = {"batch_size": bsz, "device": device}
    temperature = as_row_tensor(sampling.temperature, dtype=torch.float32, **row)
    top_k = as_row_tensor(sampling.top_k, dtype=torch.long, **row)
    top_p = as_row_tensor(sampling.top_p, dtype=torch.float32, **row)
    penalty = as_row_tensor(sampling.repetition_penalty, dtype=torch.float32, **row)
    median_rows = (temperature <= 0) | (sampling.phone_durations == "median")

    out = torch.zeros(bsz, max_steps, dtype=torch.long, device=device)
    delayed_out = torch.zeros(bsz, num_delayed, max_steps, dtype=torch.long, device=device)
    phones_out = torch.zeros(bsz, max_steps, dtype=torch.long, device=device)
    lengths = torch.zeros(bsz, dtype=torch.long, device=device)
    finished = torch.zeros(bsz, dtype=torch.bool, device=device)
    hit_guard = torch.zeros(bsz, dtype=torch.bool, device=device)
    counts = torch.zeros(bsz, vocab.num_head_classes, device=device)
    eos = vocab.eos_class
    window = sampling.repetition_window

    if device.type == "cpu":
        cpu_decode_layout(ar)
    static = static_decode_shapes(compile_step, device)
    # the model's side of the batch: with phone guidance, every row twice (lm/inference/guidance.py)
    tokens, pads, delayed_ids = model_rows(tokens), model_rows(pads), model_rows(delayed_ids)
    if phone_mode:
        phone_inputs = model_rows(phone_inputs, unconditioned_prefix(phone_inputs))
    model_bsz = tokens.shape[0]
    if use_cache:
        ar.setup_cache(
            model_bsz, cache_slots(prefix_len + max_steps, compile_step, ar.config.max_position_embeddings)
        )
        logits, delayed_logits, advance_logits = heads(prefill(ar, tokens, pads, delayed_ids, phone_inputs))
        step_fn = decode_fn(compile_step, device)
    else:
        seq = torch.cat([tokens, tokens.new_zeros(model_bsz, max_steps)], dim=1)
        if num_delayed:
            empty = delayed_ids.new_full((model_bsz, max_steps, num_delayed), NO_CODE)
            delayed_seq = torch.cat([delayed_ids, empty], dim=1)
        if phone_mode:
            phone_seq = torch.cat([phone_inputs, phone_inputs.new_zeros(model_bsz, max_steps, 2)], dim=1)
        logits, delayed_logits, advance_logits = heads(
            recompute_logits(ar, tokens, pads, delayed_ids, phone_inputs))
    check_every = 1 if device.type == "cpu" else 8  # a host sync per step would starve the GPU
    steps = 0
    for t in tqdm(range(max_steps), disable=not progress, desc="AR decode", leave=False):
        steps = t + 1
        if phone_mode:  # the pointer ends a row, never <eos>
            logits[:, eos] = float("-inf")
        else:
            logits[:, eos] = torch.where(t < min_len, float("-inf"), logits[:, eos])
        logits = apply_repetition_penalty(logits, counts, penalty)
        nxt = sample(logits, temperature, top_k, top_p, generator)
        forced = t >= guard
        nxt = torch.where(forced, eos, nxt)
        hit_guard |= forced & ~finished
        is_eos = nxt == eos
        if phone_mode:
            # this frame belongs to the current phone; the advance head says whether it is the phone's last
            current = phone_ids[rows, pointer.clamp(max=phone_ids.shape[1] - 1)]
            phones_out[:, t] = torch.where(finished, 0, current)
            advance, stay = advance_phones(advance_logits, median_rows, generator, in_phone,
                                           sampling.max_phone_frames, stay)
            if given is not None:  # given durations replace the head
                hold = given[rows, pointer.clamp(max=given.shape[1] - 1)]
                advance = torch.where(given_rows, in_phone + 1 >= hold, advance)
            pointer = pointer + advance.long()
            in_phone = torch.where(advance, 0, in_phone + 1)
            passed = (pointer >= phone_lengths) & ~finished & ~is_eos
            # the row ends after this frame: it is kept (an <eos> step keeps none), so length = t + 1
            lengths = torch.where(passed, t + 1, lengths)
            out[:, t] = torch.where(finished | is_eos, 0, nxt)
            finished |= passed
        if num_delayed:
            # this step's delayed codes belong to frame t - 1 (the last frame when it emits <eos>); at t = 0
            # the slot carries what the prefix dictates instead (the prompt's last code, or none)
            per_codebook = delayed_logits.unbind(1)
            sampled = torch.stack([sample(x, temperature, top_k, top_p, generator) for x in per_codebook], 1)
            if t > 0:
                delayed_out[:, :, t - 1] = torch.where(finished[:, None], 0, sampled)
                pending = sampled
        lengths = torch.where(is_eos & ~finished, t, lengths)
        if not phone_mode:
            out[:, t] = torch.where(finished | is_eos, 0, nxt)
        finished |= is_eos
        if on_step is not None:
            stop = on_step(ARStep(t, out, delayed_out if num_delayed else None,
                                  phones_out if phone_mode else None, lengths, finished, hit_guard))
            if stop is not None:
                stop = stop.to(device) & ~finished
                lengths = torch.where(stop, t + 1, lengths)
                finished |= stop
        if t + 1 == max_steps or (t % check_every == 0 and bool(finished.all())):
            break
        counts.scatter_add_(1, nxt[:, None], torch.ones_like(counts[:, :1]))
        if window > 0 and t >= window:
            counts.scatter_add_(1, out[:, t - window, None], -torch.ones_like(counts[:, :1]))
        token = model_rows(vocab.head_class_to_token(nxt)[:, None])
        step_delayed = model_rows(pending[:, None]) if num_delayed else None  # [B, 1, R]
        step_phone = None
        if phone_mode:  # the next slot predicts the next frame: the phone the pointer is on now
            current = phone_ids[rows, pointer.clamp(max=phone_ids.shape[1] - 1)]
            step_phone = torch.stack([torch.where(finished, 0, current), in_phone], dim=-1)[:, None]
            step_phone = model_rows(step_phone, torch.zeros_like(step_phone))
        if use_cache:
            input_pos = torch.tensor([prefix_len + t], device=device)
            if static:  # whole-cache shapes; clone: CUDA-graph outputs are reused by the next call
                logits, delayed_logits, advance_logits = heads(tuple(
                    x.clone() if x is not None else None
                    for x in step_fn(ar, token, input_pos, pads, None, step_delayed, step_phone)))
            else:
                logits, delayed_logits, advance_logits = heads(step_fn(
                    ar, token, input_pos, pads, prefix_len + t + 1, step_delayed, step_phone))
        else:
            seq[:, prefix_len + t] = token[:, 0]
            if num_delayed:
                delayed_seq[:, prefix_len + t] = step_delayed[:, 0]
            if phone_mode:
                phone_seq[:, prefix_len + t] = step_phone[:, 0]
            logits, delayed_logits, advance_logits = heads(recompute_logits(
                ar, seq[:, : prefix_len + t + 1], pads,
                delayed_seq[:, : prefix_len + t + 1] if num_delayed else None,
                phone_seq[:, : prefix_len + t + 1] if phone_mode else None,
            ))
    lengths = torch.where(finished, lengths, steps)
    width = int(lengths.max())
    return ARResult(
        codes=out[:, :width],
        lengths=lengths,
        hit_length_guard=hit_guard,
        steps=steps,
        delayed_codes=delayed_out[:, :, :width] if num_delayed else None,
        frame_phones=phones_out[:, :width] if phone_mode else None,
    )


# -- NAR -----------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_nar(
    model: TTSModel,
    text_ids: torch.Tensor,
    text_lengths: torch.Tensor,
    prompt_codes: torch.Tensor,
    prompt_lengths: torch.Tensor,
    first_codes: torch.Tensor,
    frame_lengths: torch.Tensor,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    frame_phones: torch.Tensor | None = None,
    advance_generator: bool = True,
) -> torch.Tensor:
    """Fill codebooks A+1..Q: text_ids [B, L], prompt_codes [B, Q, Fp], first_codes [B, F] (A = 1) or
    [B, A, F] (the AR's codebooks) -> [B, Q, F]. frame_phones [B, F]: a phone-aligned NAR's per-frame
    phones (what the AR generated each frame for). Greedy passes (temperature <= 0) still draw the noise a
    sampled pass would, so the generator goes on as before; advance_generator=False skips that draw (for a
    caller whose generator serves nothing after it)."""
    if first_codes.dim() == 2:
        first_codes = first_codes[:, None]
    num_q, bsz, num_first, frames = model.config.num_codebooks, *first_codes.shape
    device = first_codes.device
    codes = torch.zeros(bsz, num_q, frames, dtype=torch.long, device=device)
    codes[:, :num_first] = first_codes
    valid = torch.arange(frames, device=device)[None] < frame_lengths[:, None]
    row = {"batch_size": bsz * frames, "device": device}
    temp = as_row_tensor(temperature, dtype=torch.float32, **row)
    no_k = as_row_tensor(0, dtype=torch.long, **row)
    no_p = as_row_tensor(1.0, dtype=torch.float32, **row)
    greedy = not isinstance(temperature, list | tuple | torch.Tensor) and temperature <= 0
    for stage in range(num_first, num_q):
        inp = nar_inputs(
            text_ids,
            text_lengths,
            prompt_codes,
            prompt_lengths,
            codes,
            frame_lengths,
            torch.full((bsz,), stage, device=device),
            frame_phones=frame_phones,
        )
        logits = model.nar(inp)  # [B, F, K]
        if greedy:  # what `sample` returns for temperature <= 0, without its sorts over K classes per frame
            picked = logits.argmax(dim=-1)
            if advance_generator:  # the noise `sample` draws all the same: a seeded stream goes on as before
                noise = torch.empty(bsz * frames, logits.shape[-1], device=device)
                noise.exponential_(1.0, generator=generator)
        else:
            picked = sample(logits.flatten(0, 1), temp, no_k, no_p, generator).view(bsz, frames)
        codes[:, stage] = torch.where(valid, picked, 0)
    return codes


# -- requests -> all codebooks -------------------------------------------------------------------------------
@dataclass
class TTSRequest:
    """One utterance to synthesise. text ids are raw text-piece ids (data_pipeline's TextTokenizer).

    prompt_codes [Q', Fp] codes of the voice prompt (Q' >= the model's Q; extra codebooks are dropped).
    prompt_text_ids: the prompt's transcript -> continuation mode; None -> speaker-prompt mode.
    phone_ids [P]: a phone-aligned model's target phones (lm.inference.phone_alignment.text_phone_ids);
    phone_durations [P]: frames to hold each of them (default: the model's advance head decides);
    prompt_phones [Fp]: in continuation mode, the phone of each prompt frame (from the aligner).
    """

    text_ids: torch.Tensor
    prompt_codes: torch.Tensor
    prompt_text_ids: torch.Tensor | None = None
    phone_ids: torch.Tensor | None = None
    prompt_phones: torch.Tensor | None = None
    phone_durations: torch.Tensor | None = None


@dataclass
class GenerationResult:
    codes: torch.Tensor  # [B, Q, F], 0 past each length
    frame_lengths: torch.Tensor  # [B]
    hit_length_guard: torch.Tensor  # [B] bool


def _check_request(i: int, req: TTSRequest, model: TTSModel) -> None:
    cfg = model.config
    if req.text_ids.dim() != 1 or req.text_ids.numel() == 0:
        raise ValueError(
            f"request {i}: text_ids must be a non-empty 1-D tensor, got {tuple(req.text_ids.shape)}"
        )
    if int(req.text_ids.min()) < 0 or int(req.text_ids.max()) >= cfg.text_vocab_size:
        raise ValueError(f"request {i}: text ids outside [0, {cfg.text_vocab_size})")
    pc = req.prompt_codes
    if pc.dim() != 2 or pc.shape[0] < cfg.num_codebooks or pc.shape[1] == 0:
        raise ValueError(
            f"request {i}: prompt_codes must be [Q>={cfg.num_codebooks}, Fp>0], got {tuple(pc.shape)}"
        )
    if int(pc.min()) < 0 or int(pc.max()) >= cfg.codebook_size:
        raise ValueError(f"request {i}: prompt codes outside [0, {cfg.codebook_size})")
    d = req.phone_durations
    if d is not None and (req.phone_ids is None or d.shape != req.phone_ids.shape or int(d.min()) < 1):
        raise ValueError(f"request {i}: phone_durations must be >= 1 frame for each of its phone_ids")


@torch.inference_mode()
def generate(
    model: TTSModel,
    requests: list[TTSRequest],
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    compile_step: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
    run_nar: bool = True,
) -> GenerationResult:
    """Requests -> all Q codebooks of each target (AR with KV cache, then Q-1 NAR passes).

    on_step: passed to `generate_ar`. run_nar=False returns the AR's codebooks only ([B, ar_codebooks, F]):
    a streaming caller runs the NAR itself, on chunks."""
    sampling = sampling or SamplingConfig()
    for i, req in enumerate(requests):
        _check_request(i, req, model)
    num_q, vocab = model.config.num_codebooks, model.vocab
    device = model.ar.code_head.weight.device
    prompts = [inference_prompt(vocab, r.text_ids, r.prompt_codes[0], r.prompt_text_ids) for r in requests]
    text_lengths = torch.tensor([r.text_ids.numel() for r in requests])
    num_ar = model.config.ar_codebooks
    delayed_prefixes = first_delayed = None
    if num_ar > 1:
        delayed = [
            inference_delayed(r.text_ids, r.prompt_codes[1:num_ar], r.prompt_text_ids) for r in requests
        ]
        delayed_prefixes = [d[0] for d in delayed]
        first_delayed = torch.stack([d[1] for d in delayed])
    phone_seqs = prefix_phones = None
    if model.config.alignment == "phoneme":
        missing = [i for i, r in enumerate(requests) if r.phone_ids is None or r.phone_ids.numel() == 0]
        if missing:
            raise ValueError(f"requests {missing}: a phone-aligned model needs the target's phone_ids")
        phone_seqs = [r.phone_ids.long() for r in requests]
        prefix_phones = [prefix_phone_inputs(p.numel(), r.prompt_phones if r.prompt_text_ids is not None
                                             else None) for p, r in zip(prompts, requests, strict=True)]
    ar_out = generate_ar(
        model,
        prompts,
        text_lengths,
        sampling,
        generator,
        compile_step=compile_step,
        progress=progress,
        delayed_prefixes=delayed_prefixes,
        first_delayed=first_delayed,
        phone_seqs=phone_seqs,
        prefix_phones=prefix_phones,
        on_step=on_step,
        phone_durations=[r.phone_durations for r in requests] if phone_seqs is not None else None,
    )
    ar_codes = ar_out.codes[:, None]
    if ar_out.delayed_codes is not None:
        ar_codes = torch.cat([ar_codes, ar_out.delayed_codes], dim=1)  # [B, A, F]
    if bool(ar_out.hit_length_guard.any()):
        rows = ar_out.hit_length_guard.nonzero().flatten().tolist()
        log.warning("rows %s hit the length guard without emitting <eos> (output truncated)", rows)
    if model.nar is None or not run_nar:
        return GenerationResult(ar_codes, ar_out.lengths, ar_out.hit_length_guard)

    bsz = len(requests)
    text_ids = torch.zeros(bsz, int(text_lengths.max()), dtype=torch.long)
    prompt_lengths = torch.tensor([r.prompt_codes.shape[1] for r in requests])
    prompt_codes = torch.zeros(bsz, num_q, int(prompt_lengths.max()), dtype=torch.long)
    for b, r in enumerate(requests):
        text_ids[b, : r.text_ids.numel()] = r.text_ids.cpu()
        prompt_codes[b, :, : r.prompt_codes.shape[1]] = r.prompt_codes[:num_q].cpu()
    codes = generate_nar(
        model,
        text_ids.to(device),
        text_lengths.to(device),
        prompt_codes.to(device),
        prompt_lengths.to(device),
        ar_codes,
        ar_out.lengths,
        sampling.nar_temperature,
        generator,
        frame_phones=ar_out.frame_phones,
    )
    return GenerationResult(
        codes=codes, frame_lengths=ar_out.lengths, hit_length_guard=ar_out.hit_length_guard
    )
