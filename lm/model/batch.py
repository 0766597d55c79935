"""Batches in model space: a loader `TTSBatch` -> `LMBatch` (right-padded AR sequences and labels, the delayed
codebooks, the phone inputs) and the `NARInputs` of one NAR pass, for training and generation alike. Each
example is laid out by lm/model/sequence.py (see its docstring for the layouts).

Shape letters: B batch, S AR tokens, L text pieces, Q codebooks, F target frames, Fp prompt frames, R delayed
codebooks (ar_codebooks - 1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from data_pipeline.records import TTSBatch
from lm.model.sequence import NO_CODE, delayed_training_inputs, phone_training_inputs, training_sequence
from lm.model.vocab import IGNORE_INDEX, PAD, Vocab


@dataclass
class NARInputs:
    """Inputs of one NAR pass (training or generation).

    text_ids [B, L] raw text-piece ids (0-padded), text_lengths [B]
    prompt_codes [B, Q, Fp] (0-padded), prompt_lengths [B]
    target_codes [B, Q, F]: codebooks below `stage` are read; the rest is ignored
    frame_lengths [B]
    stage [B] codebook index to predict, ar_codebooks..Q-1 (zero-based)
    labels [B, F] target_codes[b, stage[b]] with IGNORE_INDEX on padding (training; None at inference)
    frame_phones [B, F] the phone sounding at each target frame (alignment = "phoneme"; 0 = none)
    """

    text_ids: torch.Tensor
    text_lengths: torch.Tensor
    prompt_codes: torch.Tensor
    prompt_lengths: torch.Tensor
    target_codes: torch.Tensor
    frame_lengths: torch.Tensor
    stage: torch.Tensor
    labels: torch.Tensor | None = None
    frame_phones: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> NARInputs:
        return NARInputs(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})


@dataclass
class LMBatch:
    """A padded training batch in model space (right-padded AR sequences).

    input_ids [B, S], attention_mask [B, S] bool, position_ids [B, S], labels [B, S] (pre-shifted head
    classes), target_start [B] index of the first target frame token, continuation [B] bool mode per example,
    nar: NARInputs (None when the AR predicts every codebook),
    delayed_ids / delayed_labels [B, S, R]: the AR's delayed codebooks (None when ar_codebooks = 1).
    phone_inputs [B, S, 2] / advance_labels [B, S]: phone alignment (None when alignment = "none").
    """

    keys: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    target_start: torch.Tensor
    continuation: torch.Tensor
    nar: NARInputs | None
    delayed_ids: torch.Tensor | None = None
    delayed_labels: torch.Tensor | None = None
    phone_inputs: torch.Tensor | None = None
    advance_labels: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> LMBatch:
        return LMBatch(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    @property
    def num_target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def corrupt_target_codes(batch: LMBatch, vocab: Vocab, share: float,
                         generator: torch.Generator | None = None) -> LMBatch:
    """Replace `share` of the target frames' input codes (not the prompt's, not the labels) by uniformly
    random codes, in place; returns the batch. Input position s carries frame s - target_start and predicts
    the next one, so a corrupted input hides the AR's own history from it, never the answer."""
    if share <= 0:
        return batch
    ids = batch.input_ids
    pos = torch.arange(ids.shape[1])[None]
    target = (pos >= batch.target_start[:, None]) & vocab.is_audio(ids) & batch.attention_mask
    hit = target & (torch.rand(ids.shape, generator=generator) < share)
    noise = torch.randint(0, vocab.codebook_size, ids.shape, generator=generator) + vocab.audio_offset
    batch.input_ids = torch.where(hit, noise, ids)
    return batch


def self_feed_target_codes(batch: LMBatch, ar_logits: torch.Tensor, vocab: Vocab, share: float,
                           temperature: float = 1.0, generator: torch.Generator | None = None) -> LMBatch:
    """Parallel scheduled sampling (Duckworth et al., 2019): replace `share` of the target frames' input codes
    by codes the AR itself draws there, in place; returns the batch. `ar_logits` [B, S, K+1] come from a
    no-grad teacher-forced pass over this batch; the code at input position p is the one predicted at p - 1,
    drawn at `temperature` (0: argmax) among the K codes. Unlike uniform code noise, these are the mistakes
    the AR makes itself when it runs free, so it learns to recover from those. Labels stay clean."""
    if share <= 0:
        return batch
    ids = batch.input_ids
    bsz, seq = ids.shape
    logits = ar_logits[:, :-1, : vocab.codebook_size].detach().float().cpu()
    if temperature <= 0:
        draws = logits.argmax(-1)
    else:
        probs = torch.softmax(logits / temperature, dim=-1).reshape(-1, vocab.codebook_size)
        draws = torch.multinomial(probs, 1, generator=generator).reshape(bsz, seq - 1)
    pos = torch.arange(seq)[None]
    target = (pos >= batch.target_start[:, None]) & vocab.is_audio(ids) & batch.attention_mask
    hit = target[:, 1:] & (torch.rand(bsz, seq - 1, generator=generator) < share)
    fed = ids.clone()
    fed[:, 1:] = torch.where(hit, vocab.codes_to_tokens(draws), ids[:, 1:])
    batch.input_ids = fed
    return batch


def drop_target_phones(batch: LMBatch, share: float, generator: torch.Generator | None = None) -> LMBatch:
    """Hide the target phones of `share` of the rows, in place; returns the batch. A dropped row's target
    slots read phone 0 ("none", as text and prompt slots do) and its advance labels are ignored (a phone's
    end cannot be told without the phone); its code labels stay, so the AR also learns the unconditioned
    distribution that classifier-free guidance (lm/inference/guidance.py) contrasts with. The prompt's own
    phones (continuation mode) stay, as at inference."""
    if share <= 0 or batch.phone_inputs is None:
        return batch
    rows = torch.rand(batch.input_ids.shape[0], generator=generator) < share
    pos = torch.arange(batch.input_ids.shape[1])[None]
    hidden = rows[:, None] & (pos >= batch.target_start[:, None] - 1)
    batch.phone_inputs = batch.phone_inputs.masked_fill(hidden[..., None], 0)
    batch.advance_labels = batch.advance_labels.masked_fill(hidden, IGNORE_INDEX)
    return batch


def _move(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, NARInputs):
        return value.to(device)
    return value


def _check_batch(batch: TTSBatch, vocab: Vocab, num_codebooks: int, max_positions: int) -> None:
    """Clear errors that name the offending example instead of an index error deep in an embedding."""
    for name, codes, lengths in (
        ("codes", batch.codes, batch.frame_lengths),
        ("prompt_codes", batch.prompt_codes, batch.prompt_lengths),
    ):
        if codes.dim() != 3 or codes.shape[1] < num_codebooks:
            raise ValueError(
                f"TTSBatch.{name} has shape {tuple(codes.shape)}; the model needs [B, >={num_codebooks}"
                f", F] (keys {batch.keys})"
            )
        bad = (
            ((codes[:, :num_codebooks] < 0) | (codes[:, :num_codebooks] >= vocab.codebook_size))
            .flatten(1)
            .any(1)
        )
        if bad.any():
            keys = [k for k, b in zip(batch.keys, bad.tolist(), strict=True) if b]
            raise ValueError(
                f"TTSBatch.{name} holds codes outside [0, {vocab.codebook_size}) for keys {keys}"
            )
        if (lengths > codes.shape[-1]).any():
            raise ValueError(f"TTSBatch {name} lengths exceed the padded width for keys {batch.keys}")
    bad = ((batch.text_ids < 0) | (batch.text_ids >= vocab.text_vocab_size)).any(1)
    if bad.any():
        keys = [k for k, b in zip(batch.keys, bad.tolist(), strict=True) if b]
        raise ValueError(
            f"TTSBatch.text_ids outside [0, {vocab.text_vocab_size}) for keys {keys}: was the text "
            f"tokenizer built with a larger vocabulary than ModelConfig.text_vocab_size?"
        )
    if (batch.frame_lengths < 1).any():
        keys = [k for k, n in zip(batch.keys, batch.frame_lengths.tolist(), strict=True) if n < 1]
        raise ValueError(f"TTSBatch has examples with no target frames: {keys}")
    # longest layout: <bos> text </text> <prompt> prompt </prompt> <audio> target <eos>
    worst = batch.text_lengths + batch.prompt_lengths + batch.frame_lengths + 6
    if (worst > max_positions).any():
        keys = [k for k, n in zip(batch.keys, worst.tolist(), strict=True) if n > max_positions]
        raise ValueError(
            f"examples {keys} exceed max_position_embeddings={max_positions} tokens; filter them "
            f"by length in the loader"
        )


def build_lm_batch(
    batch: TTSBatch,
    vocab: Vocab,
    num_codebooks: int,
    max_positions: int,
    continuation_prob: float = 0.25,
    generator: torch.Generator | None = None,
    ar_codebooks: int = 1,
    phone_aligned: bool = False,
) -> LMBatch:
    """TTSBatch (from the loader) -> LMBatch (model inputs + labels), on CPU.

    Each example is laid out in continuation mode with probability `continuation_prob`, else in speaker-prompt
    mode; the NAR codebook to train is drawn uniformly from ar_codebooks..Q-1 per example. Both draws use
    `generator`, so a seeded generator makes batches reproducible. Codecs with more codebooks than the model
    are truncated to the first `num_codebooks` (residual VQ is coarse-to-fine, so that is the lower-bitrate
    code).
    """
    batch = batch.to("cpu")
    _check_batch(batch, vocab, num_codebooks, max_positions)
    bsz = len(batch.keys)
    if phone_aligned:
        _check_phones(batch)
    phones = []
    continuation = torch.rand(bsz, generator=generator) < continuation_prob
    seqs, labels, starts, delayed = [], [], [], []
    for b in range(bsz):
        frames, prompt_frames = int(batch.frame_lengths[b]), int(batch.prompt_lengths[b])
        tokens, lab, start = training_sequence(
            vocab,
            batch.text_ids[b, : batch.text_lengths[b]],
            batch.codes[b, 0, :frames],
            batch.prompt_codes[b, 0, :prompt_frames],
            continuation=bool(continuation[b]),
        )
        seqs.append(tokens)
        labels.append(lab)
        starts.append(start)
        if phone_aligned:
            n = int(batch.phone_lengths[b])
            phones.append(phone_training_inputs(tokens.numel(), start, batch.phone_ids[b, :n],
                                                batch.phone_durations[b, :n]))
        if ar_codebooks > 1:
            prompt_rest = None if continuation[b] else batch.prompt_codes[b, 1:ar_codebooks, :prompt_frames]
            delayed.append(
                delayed_training_inputs(
                    tokens.numel(), start, batch.codes[b, 1:ar_codebooks, :frames], prompt_rest
                )
            )
    length = max(s.numel() for s in seqs)
    input_ids = torch.full((bsz, length), PAD, dtype=torch.long)
    label_ids = torch.full((bsz, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((bsz, length), dtype=torch.bool)
    for b, (s, lab) in enumerate(zip(seqs, labels, strict=True)):
        input_ids[b, : s.numel()] = s
        label_ids[b, : s.numel()] = lab
        attention_mask[b, : s.numel()] = True
    position_ids = torch.arange(length).expand(bsz, length).contiguous()
    delayed_ids = delayed_labels = None
    if delayed:
        delayed_ids = torch.full((bsz, length, ar_codebooks - 1), NO_CODE, dtype=torch.long)
        delayed_labels = torch.full_like(delayed_ids, IGNORE_INDEX)
        for b, (ids, lab) in enumerate(delayed):
            delayed_ids[b, : ids.shape[0]] = ids
            delayed_labels[b, : lab.shape[0]] = lab

    phone_inputs = advance_labels = None
    if phones:
        phone_inputs = torch.zeros((bsz, length, 2), dtype=torch.long)
        advance_labels = torch.full((bsz, length), IGNORE_INDEX, dtype=torch.long)
        for b, (inp, lab) in enumerate(phones):
            phone_inputs[b, : inp.shape[0]] = inp
            advance_labels[b, : lab.shape[0]] = lab

    nar = None
    if num_codebooks > ar_codebooks:
        stage = torch.randint(ar_codebooks, num_codebooks, (bsz,), generator=generator)
        nar = nar_inputs(
            batch.text_ids,
            batch.text_lengths,
            batch.prompt_codes[:, :num_codebooks],
            batch.prompt_lengths,
            batch.codes[:, :num_codebooks],
            batch.frame_lengths,
            stage,
            with_labels=True,
            frame_phones=batch.frame_phones if phone_aligned else None,
        )
    return LMBatch(
        keys=list(batch.keys),
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        labels=label_ids,
        target_start=torch.tensor(starts),
        continuation=continuation,
        nar=nar,
        delayed_ids=delayed_ids,
        delayed_labels=delayed_labels,
        phone_inputs=phone_inputs,
        advance_labels=advance_labels,
    )


def _check_phones(batch: TTSBatch) -> None:
    """A phone-aligned model needs every row's alignment, summing to its frames."""
    if batch.phone_ids is None or batch.phone_lengths is None:
        raise ValueError(f"the model is phone-aligned but batch {batch.keys} carries no phone alignments: "
                         "tokenize the shards with `scripts/tokenize_shards.py --align auto`")
    missing = [k for k, n in zip(batch.keys, batch.phone_lengths.tolist(), strict=True) if n == 0]
    if missing:
        raise ValueError(f"examples {missing} have no phone alignment (a phone-aligned model needs one)")
    sums = batch.phone_durations.sum(1)
    frames = batch.frame_lengths.tolist()
    bad = [k for k, s, f in zip(batch.keys, sums.tolist(), frames, strict=True) if s != f]
    if bad:
        raise ValueError(f"examples {bad}: frames per phone do not sum to the target's frames")


def nar_inputs(
    text_ids: torch.Tensor,
    text_lengths: torch.Tensor,
    prompt_codes: torch.Tensor,
    prompt_lengths: torch.Tensor,
    target_codes: torch.Tensor,
    frame_lengths: torch.Tensor,
    stage: torch.Tensor,
    with_labels: bool = False,
    frame_phones: torch.Tensor | None = None,
) -> NARInputs:
    """Pack one NAR pass; labels = codebook `stage` of the target, IGNORE_INDEX past each frame length."""
    labels = None
    if with_labels:
        frames = target_codes.shape[-1]
        rows = torch.arange(target_codes.shape[0], device=target_codes.device)
        labels = target_codes[rows, stage].long()
        valid = torch.arange(frames, device=target_codes.device)[None] < frame_lengths[:, None]
        labels = torch.where(valid, labels, IGNORE_INDEX)
    return NARInputs(
        text_ids=text_ids.long(),
        text_lengths=text_lengths.long(),
        prompt_codes=prompt_codes.long(),
        prompt_lengths=prompt_lengths.long(),
        target_codes=target_codes.long(),
        frame_lengths=frame_lengths.long(),
        stage=stage.long(),
        labels=labels,
        frame_phones=frame_phones.long() if frame_phones is not None else None,
    )
