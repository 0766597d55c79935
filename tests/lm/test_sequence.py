"""AR / NAR layouts: exact token layouts, label alignment, inference prefix == training prefix, errors."""

from __future__ import annotations

import pytest
import torch

from lm.model.batch import build_lm_batch
from lm.model.sequence import inference_prompt, pad_left, training_sequence
from lm.model.vocab import (
    AUDIO,
    BOS,
    END_PROMPT,
    END_TEXT,
    EOS,
    IGNORE_INDEX,
    NUM_SPECIAL,
    PAD,
    PROMPT,
    Vocab,
)

VOCAB = Vocab(text_vocab_size=100, codebook_size=50)
T0, A0 = NUM_SPECIAL, NUM_SPECIAL + 100  # text and audio offsets


def test_vocab_layout_and_head_classes():
    assert (VOCAB.text_offset, VOCAB.audio_offset, VOCAB.size) == (T0, A0, A0 + 50)
    codes = torch.tensor([0, 7, 49])
    tokens = VOCAB.codes_to_tokens(codes)
    assert tokens.tolist() == [A0, A0 + 7, A0 + 49]
    assert VOCAB.tokens_to_codes(tokens).tolist() == codes.tolist()
    assert VOCAB.token_to_head_class(torch.tensor([EOS, A0 + 3, T0 + 3, BOS])).tolist() == [50, 3, -100, -100]
    classes = torch.tensor([0, 49, VOCAB.eos_class])
    assert VOCAB.head_class_to_token(classes).tolist() == [A0, A0 + 49, EOS]
    assert (
        VOCAB.describe(EOS) == "<eos>" and VOCAB.describe(A0 + 2) == "c1:2" and VOCAB.describe(T0) == "text:0"
    )


def test_speaker_prompt_layout_and_labels():
    text, prompt, target = torch.tensor([5, 6]), torch.tensor([1, 2, 3]), torch.tensor([9, 8])
    tokens, labels, start = training_sequence(VOCAB, text, target, prompt, continuation=False)
    expected = [
        BOS,
        T0 + 5,
        T0 + 6,
        END_TEXT,
        PROMPT,
        A0 + 1,
        A0 + 2,
        A0 + 3,
        END_PROMPT,
        AUDIO,
        A0 + 9,
        A0 + 8,
        EOS,
    ]
    assert tokens.tolist() == expected
    assert start == expected.index(AUDIO) + 1
    # labels[i] is the head class of tokens[i + 1], only for target_c1 and <eos>
    assert labels.tolist() == [IGNORE_INDEX] * (start - 1) + [9, 8, VOCAB.eos_class, IGNORE_INDEX]


def test_continuation_training_layout_is_the_plain_utterance():
    text, target = torch.tensor([5, 6, 7]), torch.tensor([9, 8, 7])
    tokens, labels, start = training_sequence(VOCAB, text, target, torch.tensor([1, 2]), continuation=True)
    assert tokens.tolist() == [BOS, T0 + 5, T0 + 6, T0 + 7, END_TEXT, AUDIO, A0 + 9, A0 + 8, A0 + 7, EOS]
    assert labels[start - 1 : -1].tolist() == [9, 8, 7, VOCAB.eos_class]
    assert (labels[: start - 1] == IGNORE_INDEX).all() and labels[-1] == IGNORE_INDEX


def test_inference_prompt_equals_training_prefix_speaker_mode():
    g = torch.Generator().manual_seed(0)
    text, prompt_c1 = torch.randint(0, 100, (11,), generator=g), torch.randint(0, 50, (23,), generator=g)
    target = torch.randint(0, 50, (17,), generator=g)
    tokens, _, start = training_sequence(VOCAB, text, target, prompt_c1, continuation=False)
    assert torch.equal(inference_prompt(VOCAB, text, prompt_c1), tokens[:start])


def test_inference_prompt_equals_training_prefix_continuation_mode():
    """Continuation inference = a training utterance (prompt + target) whose prompt frames are known."""
    g = torch.Generator().manual_seed(1)
    prompt_text, text = torch.randint(0, 100, (6,), generator=g), torch.randint(0, 100, (9,), generator=g)
    prompt_c1, target = torch.randint(0, 50, (20,), generator=g), torch.randint(0, 50, (15,), generator=g)
    utterance_text, utterance_c1 = torch.cat([prompt_text, text]), torch.cat([prompt_c1, target])
    tokens, labels, start = training_sequence(VOCAB, utterance_text, utterance_c1, None, continuation=True)
    prefix = inference_prompt(VOCAB, text, prompt_c1, prompt_text_ids=prompt_text)
    assert torch.equal(prefix, tokens[: start + prompt_c1.numel()])
    # and the training labels after that prefix are exactly the target frames + <eos>
    assert labels[prefix.numel() - 1 : -1].tolist() == target.tolist() + [VOCAB.eos_class]


def test_pad_left():
    tokens, pads = pad_left([torch.tensor([1, 2, 3]), torch.tensor([4])])
    assert tokens.tolist() == [[1, 2, 3], [PAD, PAD, 4]] and pads.tolist() == [0, 2]


def test_build_lm_batch_matches_per_example_layout(tiny_config, make_batch):
    batch = make_batch(tiny_config, [5, 3, 7], [9, 4, 6], [6, 2, 4], num_codebooks=12)  # codec has more Q
    vocab = Vocab.from_config(tiny_config)
    g = torch.Generator().manual_seed(0)
    lm = build_lm_batch(batch, vocab, tiny_config.num_codebooks, 4096, continuation_prob=0.5, generator=g)
    for b in range(3):
        tokens, labels, start = training_sequence(
            vocab,
            batch.text_ids[b, : batch.text_lengths[b]],
            batch.codes[b, 0, : batch.frame_lengths[b]],
            batch.prompt_codes[b, 0, : batch.prompt_lengths[b]],
            continuation=bool(lm.continuation[b]),
        )
        n = tokens.numel()
        assert torch.equal(lm.input_ids[b, :n], tokens) and (lm.input_ids[b, n:] == PAD).all()
        assert torch.equal(lm.labels[b, :n], labels) and (lm.labels[b, n:] == IGNORE_INDEX).all()
        assert lm.attention_mask[b, :n].all() and not lm.attention_mask[b, n:].any()
        assert int(lm.target_start[b]) == start
    nar = lm.nar
    assert nar.prompt_codes.shape[1] == nar.target_codes.shape[1] == tiny_config.num_codebooks  # truncated
    assert ((nar.stage >= 1) & (nar.stage < tiny_config.num_codebooks)).all()
    for b in range(3):
        n = int(batch.frame_lengths[b])
        assert torch.equal(nar.labels[b, :n], batch.codes[b, int(nar.stage[b]), :n])
        assert (nar.labels[b, n:] == IGNORE_INDEX).all()
    # same generator seed -> same modes and stages
    again = build_lm_batch(
        batch, vocab, tiny_config.num_codebooks, 4096, 0.5, torch.Generator().manual_seed(0)
    )
    assert torch.equal(again.continuation, lm.continuation) and torch.equal(again.nar.stage, nar.stage)


def test_build_lm_batch_rejects_bad_input_naming_the_key(tiny_config, make_batch):
    vocab = Vocab.from_config(tiny_config)
    batch = make_batch(tiny_config, [3, 3], [5, 5], [4, 4])
    batch.codes[1, 0, 2] = tiny_config.codebook_size  # out of range
    with pytest.raises(ValueError, match=r"codes outside .*utt1"):
        build_lm_batch(batch, vocab, tiny_config.num_codebooks, 4096)
    batch = make_batch(tiny_config, [3, 3], [5, 5], [4, 4])
    batch.text_ids[0, 0] = tiny_config.text_vocab_size
    with pytest.raises(ValueError, match=r"text_ids outside .*utt0"):
        build_lm_batch(batch, vocab, tiny_config.num_codebooks, 4096)
    with pytest.raises(ValueError, match=r"utt0.*max_position_embeddings=10"):
        build_lm_batch(make_batch(tiny_config, [3, 3], [5, 5], [4, 4]), vocab, tiny_config.num_codebooks, 10)
    few = make_batch(tiny_config, [3], [5], [4], num_codebooks=2)
    with pytest.raises(ValueError, match="needs"):
        build_lm_batch(few, vocab, tiny_config.num_codebooks, 4096)
