"""ar_codebooks = 2 (the AR also predicts codebook 2 one frame late): exact delayed layout and labels, the
inference prefix equals the training prefix, cached decode equals full recompute, the loss adds the delayed
CE, overfitting reproduces codebooks 1 and 2 exactly, and generate() fills the rest with the NAR."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lm.checkpoint import load_model, save_ar_as_hf, save_model
from lm.inference.ar_loop import generate_ar
from lm.inference.generate import TTSRequest, generate
from lm.inference.sampling import SamplingConfig
from lm.model.batch import build_lm_batch
from lm.model.config import ModelConfig, get_preset
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.model.sequence import (
    NO_CODE,
    delayed_training_inputs,
    inference_delayed,
    inference_prompt,
    training_sequence,
)
from lm.model.vocab import IGNORE_INDEX, Vocab

VOCAB = Vocab(text_vocab_size=100, codebook_size=50)
GREEDY = SamplingConfig(temperature=0.0)
IGN, NO = IGNORE_INDEX, NO_CODE


def request_parts(raw, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row b's text pieces [L] and prompt codes [Q, Fp]."""
    return raw.text_ids[b, : raw.text_lengths[b]], raw.prompt_codes[b, :, : raw.prompt_lengths[b]]


@pytest.fixture()
def ar2_config() -> ModelConfig:
    return get_preset("tiny").replace(ar_codebooks=2, num_codebooks=4, codebook_size=64)


@pytest.fixture()
def ar2_model(ar2_config: ModelConfig) -> TTSModel:
    torch.manual_seed(0)
    return TTSModel(ar2_config)


def test_speaker_prompt_delayed_layout_and_labels():
    text, target = torch.tensor([5, 6]), torch.tensor([[9, 8], [19, 18]])
    prompt = torch.tensor([[1, 2, 3], [11, 12, 13]])
    tokens, labels, start = training_sequence(VOCAB, text, target[0], prompt[0], continuation=False)
    # slots: <bos> 5 6 </text> <prompt> 1 2 3 </prompt> <audio> 9 8 <eos>
    delayed, delayed_labels = delayed_training_inputs(tokens.numel(), start, target[1:], prompt[1:])
    assert delayed[:, 0].tolist() == [NO, NO, NO, NO, NO, NO, 11, 12, 13, NO, NO, 19, 18]
    # the position predicting codebook 1 of frame f predicts codebook 2 of frame f - 1; <eos>'s, the last one
    assert labels.tolist() == [IGN] * 9 + [9, 8, VOCAB.eos_class, IGN]
    assert delayed_labels[:, 0].tolist() == [IGN] * 10 + [19, 18, IGN]


def test_continuation_delayed_layout_is_the_plain_utterance():
    text, codes = torch.tensor([5]), torch.tensor([[9, 8, 7], [19, 18, 17]])
    tokens, _, start = training_sequence(VOCAB, text, codes[0], None, continuation=True)
    # slots: <bos> 5 </text> <audio> 9 8 7 <eos>
    delayed, delayed_labels = delayed_training_inputs(tokens.numel(), start, codes[1:], None)
    assert delayed[:, 0].tolist() == [NO, NO, NO, NO, NO, 19, 18, 17]
    assert delayed_labels[:, 0].tolist() == [IGN] * 4 + [19, 18, 17, IGN]


def test_inference_delayed_equals_the_training_prefix_in_both_modes():
    g = torch.Generator().manual_seed(0)
    text, prompt_text = torch.randint(0, 100, (9,), generator=g), torch.randint(0, 100, (4,), generator=g)
    prompt, target = torch.randint(0, 50, (2, 13), generator=g), torch.randint(0, 50, (2, 11), generator=g)

    tokens, _, start = training_sequence(VOCAB, text, target[0], prompt[0], continuation=False)
    delayed, _ = delayed_training_inputs(tokens.numel(), start, target[1:], prompt[1:])
    prefix, first = inference_delayed(text, prompt[1:])
    assert prefix.shape[0] == inference_prompt(VOCAB, text, prompt[0]).numel() == start
    assert torch.equal(prefix, delayed[:start]) and torch.equal(first, delayed[start])
    assert first.tolist() == [NO]  # the first target frame has no predecessor

    # continuation: the training utterance is prompt + target; its prefix ends after the prompt's frames
    utt_text, utt = torch.cat([prompt_text, text]), torch.cat([prompt, target], dim=1)
    tokens, _, start = training_sequence(VOCAB, utt_text, utt[0], None, continuation=True)
    delayed, _ = delayed_training_inputs(tokens.numel(), start, utt[1:], None)
    prefix, first = inference_delayed(text, prompt[1:], prompt_text)
    length = inference_prompt(VOCAB, text, prompt[0], prompt_text).numel()
    assert prefix.shape[0] == length == start + 13
    assert torch.equal(prefix, delayed[:length]) and torch.equal(first, delayed[length])
    assert first.tolist() == [int(prompt[1, -1])]  # the prompt's last codebook-2 code rides on frame 0


def test_build_lm_batch_carries_the_per_example_delayed_layout(ar2_config, make_batch):
    raw = make_batch(ar2_config, [5, 9, 3, 6], [12, 7, 20, 9], [4, 6, 5, 8], seed=2)
    lm = build_lm_batch(raw, Vocab.from_config(ar2_config), 4, 4096, 0.5, torch.Generator().manual_seed(1),
                        ar_codebooks=2)
    assert lm.continuation.any() and not lm.continuation.all()  # both modes are covered
    assert lm.delayed_ids.shape == lm.delayed_labels.shape == (*lm.input_ids.shape, 1)
    for b in range(4):
        frames, prompt_frames = int(raw.frame_lengths[b]), int(raw.prompt_lengths[b])
        length = int(lm.attention_mask[b].sum())
        prompt_rest = None if lm.continuation[b] else raw.prompt_codes[b, 1:2, :prompt_frames]
        ids, labels = delayed_training_inputs(length, int(lm.target_start[b]), raw.codes[b, 1:2, :frames],
                                              prompt_rest)
        assert torch.equal(lm.delayed_ids[b, :length], ids)
        assert torch.equal(lm.delayed_labels[b, :length], labels)
        assert (lm.delayed_ids[b, length:] == NO).all() and (lm.delayed_labels[b, length:] == IGN).all()
        # every target frame's codebook 2 is a label exactly once
        assert sorted(labels[labels != IGN].tolist()) == sorted(raw.codes[b, 1, :frames].tolist())
    assert (lm.nar.stage >= 2).all()  # the NAR never trains on a codebook the AR predicts


def test_loss_adds_the_delayed_cross_entropy_and_trains_its_tables(ar2_model, ar2_config, make_batch):
    raw = make_batch(ar2_config, [5, 9], [12, 7], [4, 6], seed=3)
    lm = ar2_model.build_batch(raw, 0.5, torch.Generator().manual_seed(0))
    out = tts_loss(ar2_model(lm), lm, nar_weight=0.5)
    m = out.metrics
    torch.testing.assert_close(out.loss.detach(), m["ar_loss"] + m["ar_delayed_loss"] + 0.5 * m["nar_loss"])
    assert 0 <= float(m["ar_delayed_acc"]) <= 1
    out.loss.backward()
    assert ar2_model.ar.delayed_heads[0].weight.grad.abs().sum() > 0
    assert ar2_model.ar.delayed_embeds[0].weight.grad.abs().sum() > 0


def test_cached_decode_equals_full_recompute_and_rows_alone(ar2_model, ar2_config, make_batch):
    ar2_model.eval()
    raw = make_batch(ar2_config, [5, 2, 7], [1, 1, 1], [9, 3, 6], seed=4)
    rows = [request_parts(raw, b) for b in range(3)]
    prompts = [inference_prompt(ar2_model.vocab, text, codes[0]) for text, codes in rows]
    delayed = [inference_delayed(text, codes[1:2]) for text, codes in rows]
    prefixes, first = [d[0] for d in delayed], torch.stack([d[1] for d in delayed])
    sampling = SamplingConfig(temperature=0.0, max_new_frames=20, min_new_frames=20)
    kwargs = {"delayed_prefixes": prefixes, "first_delayed": first}
    cached = generate_ar(ar2_model, prompts, raw.text_lengths, sampling, **kwargs)
    recomputed = generate_ar(ar2_model, prompts, raw.text_lengths, sampling, use_cache=False, **kwargs)
    assert cached.delayed_codes.shape == (3, 1, 20)
    assert torch.equal(cached.codes, recomputed.codes)
    assert torch.equal(cached.delayed_codes, recomputed.delayed_codes)
    for b in range(3):
        alone = generate_ar(ar2_model, prompts[b : b + 1], raw.text_lengths[b : b + 1], sampling,
                            delayed_prefixes=prefixes[b : b + 1], first_delayed=first[b : b + 1])
        assert torch.equal(alone.delayed_codes[0], cached.delayed_codes[b])
    assert len(set(cached.delayed_codes[0, 0].tolist())) > 1  # really sampled per step, not one constant
    with pytest.raises(ValueError, match="delayed_prefixes"):
        generate_ar(ar2_model, prompts, raw.text_lengths, sampling)


def test_overfit_reproduces_codebooks_1_and_2_then_the_nar_fills_the_rest(ar2_model, ar2_config, make_batch):
    """Only if training and inference agree on the delay (which slot carries which frame's codebook 2) does
    greedy decoding of an overfit model give back both codebooks exactly, with <eos> after the last frame."""
    raw = make_batch(ar2_config, [6, 4], [18, 11], [8, 5], seed=5)
    lm = ar2_model.build_batch(raw, continuation_prob=0.0)
    opt = torch.optim.AdamW(ar2_model.parameters(), lr=3e-3, weight_decay=0.0)
    requests = [TTSRequest(*request_parts(raw, b)) for b in range(2)]

    def reproduces() -> bool:
        ar2_model.eval()
        with torch.inference_mode():
            out = generate(ar2_model, requests, GREEDY)
        return out.frame_lengths.tolist() == [18, 11] and all(
            torch.equal(out.codes[b, :2, :n], raw.codes[b, :2, :n]) for b, n in enumerate((18, 11))
        )

    for step in range(1, 501):
        ar2_model.train()
        loss = tts_loss(ar2_model(lm), lm).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 and reproduces():
            break
    assert reproduces(), f"not reproduced after {step} steps (loss {float(loss):.3f})"
    with torch.inference_mode():
        out = generate(ar2_model, requests, GREEDY)
    assert out.codes.shape == (2, 4, 18)
    assert (out.codes[1, :, 11:] == 0).all()
    # the NAR filled codebooks 3 and 4 (an untrained-enough NAR still varies its output over frames)
    assert len(set(out.codes[0, 2].tolist())) > 1


def test_checkpoint_round_trip_keeps_the_delayed_tables(ar2_model, tmp_path):
    save_model(ar2_model, ar2_model.config, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.config.ar_codebooks == 2
    assert torch.equal(loaded.ar.delayed_heads[0].weight, ar2_model.ar.delayed_heads[0].weight)
    assert torch.equal(loaded.ar.delayed_embeds[0].weight, ar2_model.ar.delayed_embeds[0].weight)
    heads = load_file(str(save_ar_as_hf(ar2_model, tmp_path / "hf") / "code_head.safetensors"))
    assert set(heads) == {"weight", "delayed_embeds.0.weight", "delayed_heads.0.weight"}
    assert torch.equal(heads["delayed_heads.0.weight"], ar2_model.ar.delayed_heads[0].weight)


def test_config_validation_and_no_nar_when_the_ar_predicts_every_codebook():
    with pytest.raises(ValueError, match="ar_codebooks=3"):
        ModelConfig(ar_codebooks=3)
    with pytest.raises(ValueError, match="num_codebooks=1"):
        ModelConfig(ar_codebooks=2, num_codebooks=1)
    model = TTSModel(get_preset("tiny").replace(ar_codebooks=2, num_codebooks=2))
    assert model.nar is None and len(model.ar.delayed_heads) == 1


@pytest.mark.parametrize("path", ["cache", "static", "recompute"])
def test_what_generation_feeds_the_ar_is_the_training_sequence_of_its_output(
    ar2_model, ar2_config, make_batch, monkeypatch, path
):
    """Mixed speaker-prompt / continuation rows, left-padded, sampled so they stop at different steps (by
    <eos> or by the guard): every token and delayed code the AR is fed, up to <eos>, equals the training
    layout of the utterance it generated (what the loss trained it on)."""
    import lm.inference.ar_loop as ar_loop

    raw = make_batch(ar2_config, [5, 2, 7, 3], [1, 1, 1, 1], [9, 3, 6, 4], seed=4)
    prompt_texts = [torch.arange(3), None, torch.arange(4) + 7, None]
    rows = [(*request_parts(raw, b), prompt_texts[b]) for b in range(4)]
    prompts = [inference_prompt(ar2_model.vocab, text, codes[0], pt) for text, codes, pt in rows]
    delayed = [inference_delayed(text, codes[1:2], pt) for text, codes, pt in rows]
    head = ar2_model.ar.code_head  # an <eos> bias, so that some rows stop by <eos> and others by the guard
    bias = torch.zeros(head.out_features)
    bias[ar2_model.vocab.eos_class] = 1.0
    monkeypatch.setattr(head, "bias", torch.nn.Parameter(bias, requires_grad=False))
    fed = []
    embed = ar2_model.ar.embed
    monkeypatch.setattr(ar2_model.ar, "embed",
                        lambda ids, d=None, p=None: fed.append((ids, d)) or embed(ids, d, p))
    if path == "static":  # whole-cache attention, as the CUDA-graph step runs it (uncompiled here)
        monkeypatch.setattr(ar_loop, "static_decode_shapes", lambda compile_step, device: True)
    sampling = SamplingConfig(temperature=1.0, max_frames_per_text_token=3.0, guard_slack_frames=2)
    first = torch.stack([d[1] for d in delayed])
    kwargs = {"delayed_prefixes": [d[0] for d in delayed], "first_delayed": first}
    kwargs["use_cache"] = path != "recompute"
    gen = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        out = generate_ar(ar2_model.eval(), prompts, raw.text_lengths, sampling, gen, **kwargs)
    ids, fed_delayed = (fed[-1] if path == "recompute" else [torch.cat(x, 1) for x in zip(*fed, strict=True)])
    assert len(set(out.lengths.tolist())) > 1
    assert out.hit_length_guard.any() and not out.hit_length_guard.all()
    width = max(p.numel() for p in prompts)
    for b, (text, codes, prompt_text) in enumerate(rows):
        n = int(out.lengths[b])
        c1, c2 = out.codes[b, :n], out.delayed_codes[b, :, :n]
        if prompt_text is None:
            tokens, _, start = training_sequence(ar2_model.vocab, text, c1, codes[0], continuation=False)
            want, _ = delayed_training_inputs(tokens.numel(), start, c2, codes[1:2])
        else:
            utt = torch.cat([codes[:2], torch.cat([c1[None], c2])], dim=1)
            utt_text = torch.cat([prompt_text, text])
            tokens, _, start = training_sequence(ar2_model.vocab, utt_text, utt[0], None, continuation=True)
            want, _ = delayed_training_inputs(tokens.numel(), start, utt[1:], None)
        pad = width - prompts[b].numel()
        seen = min(ids.shape[1] - pad, tokens.numel())  # a row stopped by the guard was fed no <eos>
        assert torch.equal(ids[b, pad : pad + seen], tokens[:seen]), f"row {b}"
        assert torch.equal(fed_delayed[b, pad : pad + seen], want[:seen]), f"row {b}"
        assert (out.codes[b, n:] == 0).all() and (out.delayed_codes[b, :, n:] == 0).all()
