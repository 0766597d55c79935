"""The AR decode loop (`generate_ar`): prefill once, then one token a step against the static KV cache
(lm/inference/decode_steps.py), batched rows that stop independently (`finished` masks), a length guard tied
to the text length, a minimum length; the delayed codebooks, the phone pointer and phone guidance ride along.

Rows of a batch are left-padded so they all end at the same cache slot; each row's RoPE positions start at 0
at its first real token, so a row generates the same tokens alone or in a batch (tested).

Shape letters: B batch, P prefix tokens, S cache slots, V code-head classes (K codes + <eos>), F frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from lm.inference.decode_steps import (
    cache_slots,
    cpu_decode_layout,
    decode_fn,
    prefill,
    recompute_logits,
    static_decode_shapes,
)
from lm.inference.guidance import conditioned, doubled, guided, unconditioned_prefix
from lm.inference.phone_pointer import advance_phones, given_durations, phone_setup
from lm.inference.sampling import SamplingConfig, apply_repetition_penalty, as_row_tensor, sample
from lm.model.model import TTSModel
from lm.model.sequence import NO_CODE, pad_left


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
