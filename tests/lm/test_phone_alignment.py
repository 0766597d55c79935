"""alignment = "phoneme": the exact per-slot phone inputs and advance labels, the checks on batches without
alignments, and a tiny model that learns to read its phones (the loss gap with another row's phones)."""

from __future__ import annotations

import pytest
import torch

import lm.inference.ar_loop as ar_loop
from data_pipeline.records import TTSBatch
from lm.inference.ar_loop import generate_ar
from lm.inference.generate import TTSRequest, generate
from lm.inference.phone_pointer import advance_phones
from lm.inference.sampling import SamplingConfig
from lm.model.batch import build_lm_batch
from lm.model.config import ModelConfig
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.model.sequence import (
    inference_prompt,
    phone_frame_inputs,
    phone_training_inputs,
    prefix_phone_inputs,
    training_sequence,
)
from lm.model.vocab import IGNORE_INDEX, Vocab
from lm.training.validation import _rolled_texts, rescale_durations

VOCAB = Vocab(text_vocab_size=100, codebook_size=50)
IGN = IGNORE_INDEX


def test_frame_inputs_count_frames_inside_each_phone() -> None:
    inputs, last = phone_frame_inputs(torch.tensor([1, 10, 11]), torch.tensor([2, 3, 1]))
    assert inputs.tolist() == [[1, 0], [1, 1], [10, 0], [10, 1], [10, 2], [11, 0]]
    assert last.tolist() == [0, 1, 0, 0, 1, 1]


def test_the_slot_that_predicts_frame_f_carries_its_phone() -> None:
    text, target, prompt = torch.tensor([5, 6]), torch.tensor([9, 8, 7, 6]), torch.tensor([1, 2, 3])
    tokens, labels, start = training_sequence(VOCAB, text, target, prompt, continuation=False)
    # slots: <bos> 5 6 </text> <prompt> 1 2 3 </prompt> <audio> 9 8 7 6 <eos>
    assert start == 10
    phones, durations = torch.tensor([1, 10]), torch.tensor([1, 3])
    inputs, advance = phone_training_inputs(tokens.numel(), start, phones, durations)
    assert inputs[:9].eq(0).all()  # text, prompt: no phone
    # <audio> predicts frame 0; the last code's slot predicts <eos> and <eos> predicts nothing: no phone
    assert inputs[9:].tolist() == [[1, 0], [10, 0], [10, 1], [10, 2], [0, 0], [0, 0]]
    assert advance.tolist() == [IGN] * 9 + [1, 0, 0, 1, IGN, IGN]
    # the code labels sit on the same slots: slot 9 predicts frame 0's code while reading frame 0's phone
    assert labels[9:13].tolist() == [9, 8, 7, 6]


def test_a_phone_aligned_model_needs_alignments(phone_config: ModelConfig, aligned_batch) -> None:
    batch = aligned_batch(phone_config, [12, 9], seed=0)
    lm = build_lm_batch(batch, Vocab.from_config(phone_config), 2, 512, phone_aligned=True)
    assert lm.phone_inputs.shape == (*lm.input_ids.shape, 2) and lm.nar.frame_phones is not None
    bare = TTSBatch(**{**batch.__dict__, "phone_ids": None, "phone_durations": None, "phone_lengths": None,
                       "frame_phones": None, "prompt_phones": None})
    with pytest.raises(ValueError, match="no phone alignments"):
        build_lm_batch(bare, Vocab.from_config(phone_config), 2, 512, phone_aligned=True)
    broken = TTSBatch(**{**batch.__dict__, "phone_durations": batch.phone_durations + 1})
    with pytest.raises(ValueError, match=r"\['u0', 'u1'\]: frames per phone"):
        build_lm_batch(broken, Vocab.from_config(phone_config), 2, 512, phone_aligned=True)
    with pytest.raises(ValueError, match="alignment='words'"):
        phone_config.replace(alignment="words")


def test_phone_zero_adds_nothing(phone_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = TTSModel(phone_config)
    ids = torch.randint(0, 100, (2, 7))
    none = torch.zeros(2, 7, 2, dtype=torch.long)
    none[..., 1] = 3  # an in-phone index without a phone adds nothing either
    assert torch.equal(model.ar.embed(ids), model.ar.embed(ids, phone_inputs=none))
    some = none.clone()
    some[0, 2, 0] = 5
    assert not torch.equal(model.ar.embed(ids), model.ar.embed(ids, phone_inputs=some))


def test_a_tiny_model_learns_to_read_its_phones(phone_config: ModelConfig, aligned_batch) -> None:
    torch.manual_seed(0)
    model = TTSModel(phone_config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    train = [aligned_batch(phone_config, [30, 26, 22, 28], seed=s) for s in range(8)]
    g = torch.Generator().manual_seed(0)
    for step in range(240):
        lm = model.build_batch(train[step % len(train)], continuation_prob=0.3, generator=g)
        loss = tts_loss(model(lm), lm).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    held = [aligned_batch(phone_config, [27, 24, 30], seed=100 + s) for s in range(2)]

    def ar_loss(batches: list[TTSBatch]) -> tuple[float, float]:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            outs = [tts_loss(model(lm), lm) for lm in
                    (model.build_batch(b, continuation_prob=0.3, generator=g) for b in batches)]
        return (sum(float(o.ar_loss) for o in outs) / len(outs),
                sum(float(o.metrics["advance_acc"]) for o in outs) / len(outs))

    own, advance_acc = ar_loss(held)
    other, _ = ar_loss(_rolled_texts(held))
    assert other - own > 1.0, (own, other)  # the "text gap" of a model that reads its phones
    assert advance_acc > 0.9


def test_rescaled_durations_sum_and_keep_every_phone() -> None:
    for frames in (7, 20, 3):
        d = rescale_durations(torch.tensor([1, 5, 2]), frames)
        assert int(d.sum()) == frames and int(d.min()) >= 1
    assert rescale_durations(torch.tensor([2, 2]), 8).tolist() == [4, 4]


def _requests(batch: TTSBatch) -> list[TTSRequest]:
    return [TTSRequest(batch.text_ids[b, : batch.text_lengths[b]],
                       batch.prompt_codes[b, :, : batch.prompt_lengths[b]],
                       phone_ids=batch.phone_ids[b, : batch.phone_lengths[b]])
            for b in range(len(batch.keys))]


@pytest.mark.parametrize("path", ["cache", "recompute", "static"])
def test_generation_paths_agree(phone_config: ModelConfig, aligned_batch, path: str, monkeypatch) -> None:
    """An untrained model's greedy output: the KV cache, the whole-cache (static) step and full recompute
    walk the same phones and make the same codes."""
    torch.manual_seed(0)
    model = TTSModel(phone_config).eval()
    batch = aligned_batch(phone_config, [14, 9], seed=3)
    greedy = SamplingConfig(temperature=0.0, max_phone_frames=4)
    phones = _phone_kwargs(model, batch)
    reference = generate_ar(model, *_ar_args(model, batch), greedy, **phones)
    if path == "static":
        monkeypatch.setattr(ar_loop, "static_decode_shapes", lambda compile_step, device: True)
    out = generate_ar(model, *_ar_args(model, batch), greedy, use_cache=path != "recompute", **phones)
    assert torch.equal(out.codes, reference.codes) and torch.equal(out.lengths, reference.lengths)
    assert torch.equal(out.frame_phones, reference.frame_phones)
    # every phone is walked in order, each for 1..max_phone_frames frames, and the row ends after the last
    for b in range(2):
        n, phones = int(out.lengths[b]), batch.phone_ids[b, : batch.phone_lengths[b]]
        walked = torch.unique_consecutive(out.frame_phones[b, :n])
        assert torch.equal(walked, torch.unique_consecutive(phones))
        assert (out.frame_phones[b, n:] == 0).all()


def _ar_args(model: TTSModel, batch: TTSBatch):
    reqs = _requests(batch)
    prompts = [inference_prompt(model.vocab, r.text_ids, r.prompt_codes[0]) for r in reqs]
    return prompts, torch.tensor([r.text_ids.numel() for r in reqs])


def _phone_kwargs(model: TTSModel, batch: TTSBatch) -> dict:
    prompts, _ = _ar_args(model, batch)
    reqs = _requests(batch)
    return {"phone_seqs": [r.phone_ids for r in reqs],
            "prefix_phones": [prefix_phone_inputs(p.numel()) for p in prompts]}


def test_an_overfit_model_speaks_its_phones_for_their_durations(phone_config: ModelConfig, aligned_batch):
    """Trained on one batch, greedy generation from the same prompts and phones gives back the codes, the
    durations (the advance head) and the lengths, and the NAR fills the other codebook."""
    torch.manual_seed(0)
    model = TTSModel(phone_config)
    batch = aligned_batch(phone_config, [20, 13], seed=5)
    lm = model.build_batch(batch, continuation_prob=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    greedy = SamplingConfig(temperature=0.0)

    def reproduces() -> bool:
        model.eval()
        with torch.inference_mode():
            out = generate(model, _requests(batch), greedy)
        return out.frame_lengths.tolist() == [20, 13] and all(
            torch.equal(out.codes[b, 0, :n], batch.codes[b, 0, :n]) for b, n in enumerate((20, 13)))

    for step in range(1, 401):
        model.train()
        loss = tts_loss(model(lm), lm).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 and reproduces():
            break
    assert reproduces(), f"not reproduced after {step} steps (loss {float(loss):.3f})"
    with torch.inference_mode():
        out = generate(model, _requests(batch), greedy)
    assert out.codes.shape == (2, 2, 20) and (out.codes[1, :, 13:] == 0).all()
    with pytest.raises(ValueError, match="needs the target's phone_ids"):
        generate(model, [TTSRequest(batch.text_ids[0], batch.prompt_codes[0])], greedy)


def test_continuation_prefix_phones_are_the_training_layout() -> None:
    """In continuation mode the prompt's frames carry their phones exactly as the training utterance does."""
    text, codes = torch.tensor([5, 6, 7]), torch.tensor([9, 8, 7, 6, 5])
    phones, durations = torch.tensor([1, 10, 12]), torch.tensor([2, 2, 1])
    tokens, _, start = training_sequence(VOCAB, text, codes, None, continuation=True)
    train_inputs, _ = phone_training_inputs(tokens.numel(), start, phones, durations)
    # inference: the first 3 frames are the prompt (phones 1 1 10), the rest is generated
    prefix = inference_prompt(VOCAB, text[1:], codes[:3], prompt_text_ids=text[:1])
    inputs = prefix_phone_inputs(prefix.numel(), torch.tensor([1, 1, 10]))
    assert torch.equal(prefix, tokens[: prefix.numel()])
    assert torch.equal(inputs[:-1], train_inputs[: prefix.numel() - 1])


def test_checkpoint_and_hf_export_keep_the_phone_tables(phone_config: ModelConfig, tmp_path) -> None:
    from safetensors.torch import load_file

    from lm.checkpoint import load_model, save_ar_as_hf, save_model

    torch.manual_seed(0)
    model = TTSModel(phone_config)
    save_model(model, model.config, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.config.alignment == "phoneme"
    for name in ("phone_embed", "phone_pos_embed", "advance_head"):
        assert torch.equal(getattr(loaded.ar, name).weight, getattr(model.ar, name).weight)
    assert torch.equal(loaded.nar.phone_embed.weight, model.nar.phone_embed.weight)
    heads = load_file(str(save_ar_as_hf(model, tmp_path / "hf") / "code_head.safetensors"))
    assert {"phone_embed.weight", "advance_head.bias"} <= set(heads)
    assert torch.equal(heads["phone_pos_embed.weight"], model.ar.phone_pos_embed.weight)


def test_greedy_advance_ends_a_phone_at_its_median_length() -> None:
    """The advance head is a hazard: at p = 0.2 per frame a phone lasts past k frames with probability
    0.8^k, so greedy decoding leaves it on frame 4 (0.8^3 = 0.51, 0.8^4 = 0.41), not never (p > 0.5 would
    hold it to max_frames); sampled rows draw each frame and average 1 / p = 5 frames."""
    logits = torch.logit(torch.tensor([0.2, 0.2]))
    median_rows = torch.tensor([True, False])  # a greedy row (or phone_durations="median"), a sampled one
    generator = torch.Generator().manual_seed(0)
    in_phone, stay = torch.zeros(2, dtype=torch.long), torch.ones(2)
    greedy_ends, sampled_ends = [], []
    for frame in range(1, 4001):
        advance, stay = advance_phones(logits, median_rows, generator, in_phone, 40, stay)
        in_phone = torch.where(advance, 0, in_phone + 1)
        if advance[0]:
            greedy_ends.append(frame)
        if advance[1]:
            sampled_ends.append(frame)
    assert greedy_ends[:3] == [4, 8, 12]
    lengths = torch.diff(torch.tensor([0, *sampled_ends])).float()
    assert 4.5 < float(lengths.mean()) < 5.5
    held, _ = advance_phones(torch.tensor([-20.0]), torch.tensor([True]), None, torch.tensor([39]), 40,
                                  torch.ones(1))
    assert held.item()  # max_frames ends a phone whatever the head says


def test_phone_durations_setting_is_checked_and_reaches_the_sampler() -> None:
    """phone_durations="median" (decode option) makes sampled rows end phones at their median length too;
    an unknown value is refused with the allowed ones named."""
    from lm.inference.synthesis_types import DecodeConfig, SynthesisError

    assert DecodeConfig(phone_durations="median").sampling(50.0, 500, 10).phone_durations == "median"
    with pytest.raises(SynthesisError, match="'sample', 'median' or 'engine'"):
        DecodeConfig().updated({"phone_durations": "mean"})
    with pytest.raises(SynthesisError, match=r"speed must be in \[0.25, 4.0\]"):
        DecodeConfig().updated({"speed": 5.0})
    with pytest.raises(SynthesisError, match="speed 1.5 needs phone_durations='engine'"):
        DecodeConfig().updated({"speed": 1.5})
    DecodeConfig().updated({"speed": 1.5, "phone_durations": "engine"})
    # "engine": lengths are given per row (flite's), so the sampler's own setting is the head's default
    assert DecodeConfig(phone_durations="engine").sampling(50.0, 500, 10).phone_durations == "sample"
    with pytest.raises(ValueError, match="'sample' or 'median'"):
        SamplingConfig(phone_durations="mean")


def test_given_phone_durations_are_held_exactly(phone_config: ModelConfig, aligned_batch) -> None:
    """TTSRequest.phone_durations replaces the advance head: an untrained model holds every phone for the
    given frames (row 0), while a row without them (row 1) still walks its phones by the head."""
    torch.manual_seed(0)
    model = TTSModel(phone_config).eval()
    batch = aligned_batch(phone_config, [14, 9], seed=3)
    reqs = _requests(batch)
    given = torch.arange(len(reqs[0].phone_ids)) % 3 + 1
    reqs[0].phone_durations = given
    out = generate(model, reqs, SamplingConfig(temperature=0.0, max_phone_frames=4))
    n = int(out.frame_lengths[0])
    assert n == int(given.sum())
    assert out.codes.shape[1] == phone_config.num_codebooks
    held = generate_ar(model, *_ar_args(model, batch), SamplingConfig(temperature=0.0),
                       **_phone_kwargs(model, batch), phone_durations=[given, None])
    assert torch.equal(held.frame_phones[0, :n], torch.repeat_interleave(reqs[0].phone_ids, given))
    assert torch.equal(torch.unique_consecutive(held.frame_phones[1, : int(held.lengths[1])]),
                       torch.unique_consecutive(reqs[1].phone_ids))
    reqs[0].phone_durations = torch.zeros_like(given)
    with pytest.raises(ValueError, match="phone_durations must be >= 1 frame"):
        generate(model, reqs, SamplingConfig(temperature=0.0))


def test_code_noise_hides_only_target_inputs(phone_config: ModelConfig, aligned_batch) -> None:
    """data.code_noise: a share of the target frames' input codes become random codes; the prompt, the text,
    the labels and the phone inputs stay as they were."""
    from lm.model.batch import corrupt_target_codes

    model = TTSModel(phone_config)
    batch = aligned_batch(phone_config, [30, 25], seed=1)
    clean = model.build_batch(batch, 0.0, torch.Generator().manual_seed(0))
    noisy = corrupt_target_codes(model.build_batch(batch, 0.0, torch.Generator().manual_seed(0)), model.vocab,
                                 0.5, torch.Generator().manual_seed(1))
    changed = noisy.input_ids != clean.input_ids
    pos = torch.arange(clean.input_ids.shape[1])[None]
    assert changed.any()
    assert not (changed & (pos < clean.target_start[:, None])).any()  # text and prompt untouched
    assert model.vocab.is_audio(noisy.input_ids[changed]).all()
    assert torch.equal(noisy.labels, clean.labels) and torch.equal(noisy.phone_inputs, clean.phone_inputs)
    targets = model.vocab.is_audio(clean.input_ids) & (pos >= clean.target_start[:, None])
    share = changed.sum() / targets.sum()
    assert 0.3 < float(share) < 0.6  # 0.5, less the random codes that hit the same code
    assert corrupt_target_codes(clean, model.vocab, 0.0) is clean


def test_self_feed_feeds_the_ar_its_own_draws(phone_config: ModelConfig, aligned_batch) -> None:
    """data.self_feed: the code at input p is the one the AR predicted at p - 1. Fed its own perfect
    predictions (logits peaked on the labels, argmax), every input stays as it was; fed a real model's draws,
    only target-frame audio inputs change, and labels and phones never do."""
    from lm.model.batch import self_feed_target_codes

    model = TTSModel(phone_config)
    batch = aligned_batch(phone_config, [30, 25], seed=1)

    def fresh():
        return model.build_batch(batch, 0.0, torch.Generator().manual_seed(0))

    clean = fresh()
    vocab = model.vocab
    oracle = torch.zeros(*clean.labels.shape, vocab.codebook_size + 1)
    known = clean.labels != IGNORE_INDEX
    oracle[known] = torch.nn.functional.one_hot(clean.labels[known], vocab.codebook_size + 1).float() * 50
    perfect = self_feed_target_codes(fresh(), oracle, vocab, 0.999, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(perfect.input_ids, clean.input_ids)

    shuffled = oracle.roll(1, dims=1)  # predictions one frame off: now every fed input must change
    off = self_feed_target_codes(fresh(), shuffled, vocab, 0.999, 0.0, torch.Generator().manual_seed(1))
    pos = torch.arange(clean.input_ids.shape[1])[None]
    targets = vocab.is_audio(clean.input_ids) & (pos >= clean.target_start[:, None])
    changed = off.input_ids != clean.input_ids
    assert not (changed & ~targets).any() and changed.sum() > 0.8 * targets.sum()

    with torch.no_grad():
        logits = model.ar(clean.input_ids, clean.attention_mask, clean.position_ids,
                          phone_inputs=clean.phone_inputs)
    fed = self_feed_target_codes(fresh(), logits, vocab, 0.5, 1.0, torch.Generator().manual_seed(2))
    changed = fed.input_ids != clean.input_ids
    assert changed.any() and not (changed & ~targets).any()
    assert vocab.is_audio(fed.input_ids[changed]).all()
    assert torch.equal(fed.labels, clean.labels) and torch.equal(fed.phone_inputs, clean.phone_inputs)
    assert self_feed_target_codes(clean, logits, vocab, 0.0) is clean


def test_engine_durations_are_flites_at_the_prompts_pace() -> None:
    """phone_durations="engine": the target phones of `text_phone_ids` with flite kal's lengths; a prompt
    pace rescales the spoken phones and clause pauses (not the 0.1 s edges) to that many seconds per phone."""
    from data_pipeline.alignment.g2p import spoken_phone_seconds, spoken_phones
    from data_pipeline.alignment.phones import PHONE_ID
    from lm.inference.phone_alignment import prompt_seconds_per_phone, text_phone_frames, text_phone_ids

    text = "Two words, and three more."
    timed = spoken_phone_seconds(text)
    assert [p for p, _ in timed] == spoken_phones(text)
    assert timed[0] == ("pau", 0.1) and timed[-1] == ("pau", 0.1)
    assert all(0.0 < sec < 0.5 for _, sec in timed)
    ids, frames = text_phone_frames(text, 50.0)
    assert torch.equal(ids, text_phone_ids(text)) and frames.min() >= 1
    assert abs(int(frames.sum()) - 50.0 * sum(sec for _, sec in timed)) <= 1  # rounding never drifts
    spoken = torch.tensor([p != "pau" for p, _ in timed])
    natural = float(frames[spoken].sum()) / 50.0 / int(spoken.sum())
    _, slow = text_phone_frames(text, 50.0, seconds_per_phone=2 * natural)
    assert abs(float(slow[spoken].sum()) / float(frames[spoken].sum()) - 2.0) < 0.1
    assert slow[0] == frames[0] == 5 and slow[-1] == frames[-1] == 5  # 0.1 s edges at any pace
    _, capped = text_phone_frames(text, 50.0, seconds_per_phone=10.0, max_frames=32)
    assert int(capped.max()) == 32
    _, fast = text_phone_frames(text, 50.0, seconds_per_phone=2 * natural, speed=2.0)
    assert abs(float(fast[spoken].sum()) / float(frames[spoken].sum()) - 1.0) < 0.1  # 2x slower, 2x faster
    # the prompt's pace: its frames that hold a phone per phone of its transcript ("in being": 6 phones)
    pau, ih = PHONE_ID["pau"], PHONE_ID["ih"]
    prompt = torch.tensor([0] * 4 + [pau] * 10 + [ih] * 30 + [pau] * 5)
    assert prompt_seconds_per_phone(prompt, "in being", 50.0) == pytest.approx(30 / 50 / 6)
    assert prompt_seconds_per_phone(torch.full((10,), pau), "in being", 50.0) is None
