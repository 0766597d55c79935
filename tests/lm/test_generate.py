"""Generation: cached == uncached greedy decode, batched rows == rows alone, rows stop independently, length
guard / minimum length, NAR shapes + determinism, and overfitting utterances until greedy decoding reproduces
them exactly and stops with <eos>."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from data_pipeline.records import TTSBatch
from lm.inference.ar_loop import generate_ar
from lm.inference.generate import TTSRequest, fill_codebooks, generate
from lm.inference.nar_pass import generate_nar
from lm.inference.sampling import SamplingConfig
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.model.sequence import inference_prompt

GREEDY = SamplingConfig(temperature=0.0)
SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"


def prompts_for(model, batch, rows=None):
    rows = range(len(batch.keys)) if rows is None else rows
    return [
        inference_prompt(
            model.vocab,
            batch.text_ids[b, : batch.text_lengths[b]],
            batch.prompt_codes[b, 0, : batch.prompt_lengths[b]],
        )
        for b in rows
    ]


def test_cached_greedy_decode_equals_full_recompute_and_rows_alone(tiny_model, tiny_config, make_batch):
    tiny_model.eval()
    batch = make_batch(tiny_config, [5, 2, 7], [1, 1, 1], [9, 3, 6], seed=3)
    prompts = prompts_for(tiny_model, batch)
    sampling = SamplingConfig(temperature=0.0, max_new_frames=24, min_new_frames=24)
    cached = generate_ar(tiny_model, prompts, batch.text_lengths, sampling)
    recomputed = generate_ar(tiny_model, prompts, batch.text_lengths, sampling, use_cache=False)
    assert cached.lengths.tolist() == [24, 24, 24]
    assert torch.equal(cached.codes, recomputed.codes)
    for b in range(3):
        alone = generate_ar(tiny_model, prompts[b : b + 1], batch.text_lengths[b : b + 1], sampling)
        assert torch.equal(alone.codes[0], cached.codes[b])
    # a random model repeats itself; it still must not be one constant code
    assert len(set(cached.codes[0].tolist())) > 1


def test_length_guard_and_minimum_length(tiny_model, tiny_config, make_batch):
    tiny_model.eval()
    batch = make_batch(tiny_config, [2, 4], [1, 1], [3, 3])
    prompts = prompts_for(tiny_model, batch)
    eos = tiny_model.vocab.eos_class

    def eos_logit(value):
        def hook(_module, _inputs, logits):
            logits = logits.clone()
            logits[..., eos] = value
            return logits

        return tiny_model.ar.code_head.register_forward_hook(hook)

    # a head that never says <eos>: the guard stops rows at ceil(3 * text_len) + 1 frames, and flags them
    handle = eos_logit(float("-inf"))
    sampling = SamplingConfig(temperature=0.0, max_frames_per_text_token=3.0, guard_slack_frames=1)
    out = generate_ar(tiny_model, prompts, batch.text_lengths, sampling)
    handle.remove()
    assert out.lengths.tolist() == [7, 13] and out.hit_length_guard.tolist() == [True, True]
    assert (out.codes[0, 7:] == 0).all() and out.codes.shape[1] == 13
    # a head that always prefers <eos>: never stops at step 0, yields min_new_frames frames, then <eos>
    handle = eos_logit(1e4)
    out = generate_ar(
        tiny_model, prompts, batch.text_lengths, SamplingConfig(temperature=1.0, min_new_frames=3)
    )
    assert out.lengths.tolist() == [3, 3] and not out.hit_length_guard.any()
    per_text = SamplingConfig(temperature=0.0, min_new_frames=1, min_frames_per_text_token=2.5)
    out = generate_ar(tiny_model, prompts, batch.text_lengths, per_text)
    handle.remove()
    assert out.lengths.tolist() == [5, 10]


def test_nar_fills_all_codebooks_deterministically(tiny_model, tiny_config, make_batch):
    tiny_model.eval()
    batch = make_batch(tiny_config, [5, 3], [9, 4], [6, 2])
    first = batch.codes[:, 0]
    args = (batch.text_ids, batch.text_lengths, batch.prompt_codes, batch.prompt_lengths, first)
    codes = generate_nar(
        tiny_model, *args, batch.frame_lengths, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    again = generate_nar(
        tiny_model, *args, batch.frame_lengths, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    other = generate_nar(
        tiny_model, *args, batch.frame_lengths, temperature=1.0, generator=torch.Generator().manual_seed(1)
    )
    assert codes.shape == (2, tiny_config.num_codebooks, 9)
    assert torch.equal(codes, again) and not torch.equal(codes, other)
    assert torch.equal(codes[:, 0], first)
    assert (codes[1, :, 4:] == 0).all()  # nothing past the frame length
    greedy = generate_nar(tiny_model, *args, batch.frame_lengths)
    assert torch.equal(greedy, generate_nar(tiny_model, *args, batch.frame_lengths))


def test_fill_codebooks_is_the_nar_half_of_generate_and_fills_picked_rows_alone(tiny_model, tiny_config,
                                                                                make_batch):
    tiny_model.eval()
    batch = make_batch(tiny_config, [5, 2, 7], [1, 1, 1], [9, 3, 6], seed=5)
    requests = [TTSRequest(batch.text_ids[b, : batch.text_lengths[b]],
                           batch.prompt_codes[b, :, : batch.prompt_lengths[b]]) for b in range(3)]
    sampling = SamplingConfig(temperature=0.8, max_new_frames=12)
    whole = generate(tiny_model, requests, sampling, torch.Generator().manual_seed(7))
    ar = generate(tiny_model, requests, sampling, torch.Generator().manual_seed(7), run_nar=False)
    assert ar.codes.shape[1] == tiny_config.ar_codebooks
    filled = fill_codebooks(tiny_model, requests, ar, sampling.nar_temperature)
    assert filled.codes.shape[1] == tiny_config.num_codebooks > tiny_config.ar_codebooks
    assert torch.equal(filled.codes, whole.codes) and torch.equal(filled.frame_lengths, whole.frame_lengths)
    # rows picked out of the AR batch get the codebooks they get in the whole batch (greedy NAR)
    picked = fill_codebooks(tiny_model, [requests[2], requests[0]], ar.select([2, 0]))
    for i, b in enumerate([2, 0]):
        n = int(whole.frame_lengths[b])
        assert torch.equal(picked.codes[i, :, :n], whole.codes[b, :, :n])
    assert picked.frame_lengths.tolist() == [int(whole.frame_lengths[2]), int(whole.frame_lengths[0])]
    with pytest.raises(ValueError, match="2 requests for 3 AR rows"):
        fill_codebooks(tiny_model, requests[:2], ar)


def overfit(model: TTSModel, batch: TTSBatch, max_steps: int, lr: float = 3e-3) -> int:
    """Train on one batch (speaker-prompt mode) until greedy decoding reproduces every row; returns steps."""
    lm_batch = model.build_batch(batch, continuation_prob=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(1, max_steps + 1):
        model.train()
        loss = tts_loss(model(lm_batch), lm_batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 and reproduces(model, batch):
            return step
    return max_steps


def reproduces(model: TTSModel, batch: TTSBatch) -> bool:
    model.eval()
    out = generate_ar(model, prompts_for(model, batch), batch.text_lengths, GREEDY)
    return all(
        int(out.lengths[b]) == int(batch.frame_lengths[b])
        and torch.equal(out.codes[b, : out.lengths[b]], batch.codes[b, 0, : batch.frame_lengths[b]])
        for b in range(len(batch.keys))
    )


def test_overfit_two_utterances_then_batched_rows_stop_independently(tiny_model, tiny_config, make_batch):
    torch.manual_seed(0)
    batch = make_batch(tiny_config, [6, 4], [20, 11], [8, 5], seed=5)
    steps = overfit(tiny_model, batch, max_steps=400)
    tiny_model.eval()
    out = generate_ar(tiny_model, prompts_for(tiny_model, batch), batch.text_lengths, GREEDY)
    assert out.lengths.tolist() == [20, 11], f"after {steps} steps"
    assert not out.hit_length_guard.any()  # both stopped by their own <eos>, at different steps
    for b in range(2):
        assert torch.equal(out.codes[b, : out.lengths[b]], batch.codes[b, 0, : batch.frame_lengths[b]])
    assert (out.codes[1, 11:] == 0).all()


@pytest.mark.integration
def test_overfit_real_encodec_codes_end_to_end(tiny_config):
    """Real codes (the random 24 kHz EnCodec on real clips) -> overfit -> generate() -> codec decode."""
    from codec import load_audio, load_codec

    codec = load_codec("encodec_24khz:random")
    clips = [
        SPEECH / "ljspeech-sample" / "LJ001-0002.wav",
        SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0001.wav",
    ]
    encoded = []
    for path in clips:
        wav, sr = load_audio(path)
        wav = wav[:, : int(0.6 * sr)]  # 0.6 s: 45 frames of real codes each
        encoded.append(codec.encode(wav[None], sample_rate=sr).codes[0])
    target, prompt = encoded
    text = torch.tensor(list(b"printing"))  # bytes of real text as text ids (< text_vocab_size)
    batch = TTSBatch(
        keys=["lj"],
        speakers=["lj"],
        text_ids=text[None],
        text_lengths=torch.tensor([text.numel()]),
        codes=target[None],
        frame_lengths=torch.tensor([target.shape[1]]),
        prompt_codes=prompt[None, :, :20],
        prompt_lengths=torch.tensor([20]),
    )
    torch.manual_seed(0)
    model = TTSModel(tiny_config)
    start = time.perf_counter()
    steps = overfit(model, batch, max_steps=600)
    assert reproduces(model, batch), (
        f"not reproduced after {steps} steps ({time.perf_counter() - start:.0f} s)"
    )
    result = generate(model, [TTSRequest(text, prompt[:, :20])], GREEDY)
    assert result.codes.shape == (1, codec.num_codebooks, target.shape[1])
    assert torch.equal(result.codes[0, 0], target[0]) and not result.hit_length_guard.any()
    wav = codec.decode(result.codes)
    assert wav.shape[-1] == target.shape[1] * codec.hop_length and torch.isfinite(wav).all()
