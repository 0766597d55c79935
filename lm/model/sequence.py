"""The one place where text ids and codes become model inputs (training and generation both call it).
The per-example layouts are here; padded batches of them (`LMBatch`, `NARInputs`) are in lm/model/batch.py.

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

import torch

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
