"""The one place where text ids and codes become model inputs (training and generation both call it).

AR layouts (token space from `lm/model/vocab.py`):

  speaker-prompt mode (needs no prompt transcript):
      <bos> text </text> <prompt> prompt_c1 </prompt> <audio> | target_c1 <eos>
  continuation mode (VALL-E; the prompt transcript is known):
      inference: <bos> prompt_text target_text </text> <audio> prompt_c1 | target_c1 <eos>
      training:  the plain utterance  <bos> text </text> <audio> | c1 <eos>
  ("|" = end of the prefix; the loss covers everything after it.)

Decision for continuation training: a TTSBatch carries no prompt transcript, so continuation examples are the
plain utterance with loss on all of its audio. At inference the (prompt + target) utterance then looks
exactly like a training utterance whose first frames are already known, so the inference prefix equals a
training prefix token for token (tested). `continuation_prob` picks the mode per example.

Labels are pre-shifted: `labels[b, i]` is the code-head class (code or <eos>) of token `i + 1`, or
IGNORE_INDEX, so logits at position i line up with labels at position i and the loss never shifts.

Delay pattern (ar_codebooks = 2, MusicGen): codebook 2 rides on the codebook-1 token stream one slot late. An
audio segment whose codebook-1 tokens sit at slots s .. s+F-1 puts codebook 2 of frame f on slot s+f+1 (the
last one on the token right after the segment: </prompt>, <eos>, or in continuation inference the first
generated slot). `delayed_ids [S, R]` hold those codes (NO_CODE where a slot carries none) and are embedded
and summed into the token's embedding; `delayed_labels` are pre-shifted the same way as `labels`, so one
position predicts codebook 1 of frame f and codebook 2 of frame f-1, which it already conditions on codebook
1 of frame f-1. The step that emits <eos> also emits the last frame's codebook 2, so no step is added.

Phone alignment (alignment = "phoneme"): the slot that predicts target frame f (slot target_start - 1 + f:
<audio> for f = 0, else the codebook-1 token of frame f - 1) also carries the phone sounding at frame f and
f's index inside that phone (`phone_inputs [S, 2]`, 0 = none elsewhere: text, prompt, the slot that
predicts <eos>), and is labelled with whether f is the phone's last frame (`advance_labels [S]`). At
inference a pointer walks the transcript's phones with the same inputs (lm/inference/phone_pointer.py). The
NAR gets the phone of every target frame (`NARInputs.frame_phones`).

NAR inputs (`NARInputs`) are the target's text pieces, the full prompt codes (all Q codebooks), the target
codes and the codebook index `stage` to predict (ar_codebooks..Q-1, zero-based); the NAR sums embeddings of
target codebooks below `stage` and predicts codebook `stage` for every target frame at once.

Shape letters: B batch, S AR tokens, L text pieces, Q codebooks, F target frames, Fp prompt frames, R delayed
codebooks (ar_codebooks - 1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from data_pipeline.records import TTSBatch
from lm.model.vocab import AUDIO, BOS, END_PROMPT, END_TEXT, EOS, IGNORE_INDEX, PAD, PROMPT, Vocab

NO_CODE = -1  # a delayed_ids slot that carries no code (adds no embedding)


def _tokens(*ids: int) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def audio_start(text_len: int) -> int:
    """Slot of the first audio token in every layout: after <bos> text </text> and <prompt> or <audio>."""
    return text_len + 3


# -- delayed codebooks (ar_codebooks > 1) ----------------------------------------------------------------
def place_delayed(delayed: torch.Tensor, start: int, codes: torch.Tensor) -> None:
    """Write codebooks 2.. of a segment whose codebook-1 tokens start at slot `start` into delayed [S, R]:
    codebook r+2 of frame f goes to slot start + f + r + 1 (what falls past S is dropped)."""
    for r in range(codes.shape[0]):
        first = start + r + 1
        n = max(0, min(codes.shape[1], delayed.shape[0] - first))
        delayed[first : first + n, r] = codes[r, :n]


def delayed_training_inputs(
    num_tokens: int,
    target_start: int,
    target_rest: torch.Tensor,
    prompt_rest: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """delayed_ids [S, R] and pre-shifted delayed_labels [S, R] of one training sequence.

    target_rest [R, F] / prompt_rest [R, Fp]: codebooks 2..R+1 of the target / of the speaker prompt (None in
    continuation mode, where the prompt is part of the target)."""
    delayed = torch.full((num_tokens, target_rest.shape[0]), NO_CODE, dtype=torch.long)
    if prompt_rest is not None:
        place_delayed(delayed, target_start - prompt_rest.shape[1] - 2, prompt_rest)  # </prompt> <audio>
    place_delayed(delayed, target_start, target_rest.long())
    labels = torch.full_like(delayed, IGNORE_INDEX)
    following = delayed[target_start:]
    labels[target_start - 1 : -1] = torch.where(following >= 0, following, IGNORE_INDEX)
    return delayed, labels


def inference_delayed(
    text_ids: torch.Tensor, prompt_rest: torch.Tensor, prompt_text_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The delayed_ids [P, R] of `inference_prompt`'s prefix and those of the first generated slot [R].

    In continuation mode the prompt's last codebook-2 code rides on the first generated token (exactly as in
    training, where prompt and target are one utterance); in speaker-prompt mode that slot carries none."""
    text_len = text_ids.numel() + (0 if prompt_text_ids is None else prompt_text_ids.numel())
    frames, num_rest = prompt_rest.shape[1], prompt_rest.shape[0]
    # speaker prompt: ... <prompt> prompt </prompt> <audio>; continuation: ... <audio> prompt
    prefix_len = audio_start(text_len) + frames + (2 if prompt_text_ids is None else 0)
    delayed = torch.full((prefix_len + 1, num_rest), NO_CODE, dtype=torch.long)
    # speaker prompt: its last code sits on </prompt>, so nothing rides on the first generated slot
    place_delayed(delayed, audio_start(text_len), prompt_rest.long().cpu())
    return delayed[:-1], delayed[-1]


# -- phone alignment (alignment = "phoneme") ------------------------------------------------------------
def phone_frame_inputs(phone_ids: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Phones [P] and their frames [P] -> per frame (phone id, index inside the phone) [F, 2] and whether the
    frame is its phone's last [F] (the advance label)."""
    durations = durations.long()
    frame_phone = torch.repeat_interleave(phone_ids.long(), durations)
    starts = torch.repeat_interleave(torch.cumsum(durations, 0) - durations, durations)
    in_phone = torch.arange(frame_phone.numel()) - starts
    last = in_phone == torch.repeat_interleave(durations, durations) - 1
    return torch.stack([frame_phone, in_phone], dim=1), last.long()


def phone_training_inputs(
    num_tokens: int, target_start: int, phone_ids: torch.Tensor, durations: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """phone_inputs [S, 2] and advance_labels [S] of one training sequence (see the module docstring)."""
    per_frame, last = phone_frame_inputs(phone_ids.cpu(), durations.cpu())
    inputs = torch.zeros(num_tokens, 2, dtype=torch.long)
    labels = torch.full((num_tokens,), IGNORE_INDEX, dtype=torch.long)
    first = target_start - 1  # the slot that predicts frame 0
    inputs[first : first + per_frame.shape[0]] = per_frame
    labels[first : first + per_frame.shape[0]] = last
    return inputs, labels


def prefix_phone_inputs(prefix_len: int, prompt_phones: torch.Tensor | None = None) -> torch.Tensor:
    """The phone inputs [P, 2] of an inference prefix: none, except in continuation mode, where the prompt's
    frames are the first frames of the utterance (`prompt_phones` [Fp]: the phone of each prompt frame,
    from the aligner) and the slots that predict them carry them, exactly as in training. The last slot's
    entry (it predicts the first target frame) is the generator's to set."""
    inputs = torch.zeros(prefix_len, 2, dtype=torch.long)
    if prompt_phones is None or prompt_phones.numel() == 0:
        return inputs
    phones = prompt_phones.long().cpu()
    change = torch.cat([torch.tensor([True]), phones[1:] != phones[:-1]])
    starts = torch.cat([change.nonzero().flatten(), torch.tensor([phones.numel()])])
    per_frame, _ = phone_frame_inputs(phones[starts[:-1]], torch.diff(starts))
    frames = per_frame.shape[0]
    first = prefix_len - frames - 1  # <audio>: predicts prompt frame 0
    inputs[first : first + frames] = per_frame
    return inputs


# -- per-example AR layouts ----------------------------------------------------------------------------------
def speaker_prompt_prefix(vocab: Vocab, text_ids: torch.Tensor, prompt_c1: torch.Tensor) -> torch.Tensor:
    """<bos> text </text> <prompt> prompt_c1 </prompt> <audio>  ->  [S] tokens."""
    return torch.cat(
        [
            _tokens(BOS),
            vocab.text_to_tokens(text_ids),
            _tokens(END_TEXT, PROMPT),
            vocab.codes_to_tokens(prompt_c1),
            _tokens(END_PROMPT, AUDIO),
        ]
    )


def continuation_prefix(
    vocab: Vocab, text_ids: torch.Tensor, audio_prefix_c1: torch.Tensor | None = None
) -> torch.Tensor:
    """<bos> text </text> <audio> audio_prefix_c1  ->  [S] tokens (text = prompt text + target text)."""
    audio = audio_prefix_c1 if audio_prefix_c1 is not None else torch.zeros(0, dtype=torch.long)
    return torch.cat(
        [_tokens(BOS), vocab.text_to_tokens(text_ids), _tokens(END_TEXT, AUDIO), vocab.codes_to_tokens(audio)]
    )


def inference_prompt(
    vocab: Vocab, text_ids: torch.Tensor, prompt_c1: torch.Tensor, prompt_text_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """The AR prefix to generate from; equals the training prefix of the same example exactly.

    text_ids [L] target text pieces, prompt_c1 [Fp] codebook-1 codes of the prompt, prompt_text_ids [Lp] or
    None. With the prompt transcript -> continuation mode, without -> speaker-prompt mode.
    """
    text_ids, prompt_c1 = text_ids.long().cpu(), prompt_c1.long().cpu()
    if prompt_text_ids is None:
        return speaker_prompt_prefix(vocab, text_ids, prompt_c1)
    return continuation_prefix(vocab, torch.cat([prompt_text_ids.long().cpu(), text_ids]), prompt_c1)


def training_sequence(
    vocab: Vocab,
    text_ids: torch.Tensor,
    target_c1: torch.Tensor,
    prompt_c1: torch.Tensor | None,
    continuation: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One training example -> (tokens [S], labels [S] pre-shifted head classes, target_start).

    `target_start` is the index of the first target_c1 token; the loss covers target_c1 and <eos>.
    """
    text_ids, target_c1 = text_ids.long().cpu(), target_c1.long().cpu()
    if continuation:
        prefix = continuation_prefix(vocab, text_ids)
    else:
        prefix = speaker_prompt_prefix(vocab, text_ids, prompt_c1.long().cpu())
    tokens = torch.cat([prefix, vocab.codes_to_tokens(target_c1), _tokens(EOS)])
    target_start = prefix.numel()
    labels = torch.full_like(tokens, IGNORE_INDEX)
    # position i predicts token i + 1: supervise predictions of tokens target_start .. end (<eos> included)
    labels[target_start - 1 : -1] = vocab.token_to_head_class(tokens[target_start:])
    return tokens, labels, target_start


def pad_left(seqs: list[torch.Tensor], pad_id: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D token sequences so every row ends at the same slot (batched decoding).

    Returns tokens [B, S] and pad_lengths [B] (number of pad slots at the start of each row).
    """
    length = max(s.numel() for s in seqs)
    out = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    pads = torch.tensor([length - s.numel() for s in seqs], dtype=torch.long)
    for b, s in enumerate(seqs):
        out[b, length - s.numel() :] = s
    return out, pads


# -- batches -------------------------------------------------------------------------------------------------
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
