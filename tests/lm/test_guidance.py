"""Classifier-free guidance on the phones (`SamplingConfig.phone_guidance`, lm/inference/guidance.py): the
guided codes against a reference that runs the conditioned and the unconditioned sequence separately, the
three decode paths, batch independence, and the checks."""

from __future__ import annotations

import pytest
import torch

import lm.inference.ar_loop as ar_loop
from data_pipeline.records import TTSBatch
from lm.inference.ar_loop import generate_ar
from lm.inference.decode_steps import prefix_mask
from lm.inference.sampling import SamplingConfig
from lm.inference.synthesis_types import DecodeConfig, SynthesisError
from lm.model.batch import drop_target_phones
from lm.model.config import ModelConfig
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.model.sequence import inference_prompt, prefix_phone_inputs
from lm.model.vocab import IGNORE_INDEX


def _rows(model: TTSModel, batch: TTSBatch) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """(AR prefixes, text lengths, target phones) of the batch's rows (speaker-prompt mode)."""
    prompts, phones = [], []
    for b in range(len(batch.keys)):
        text = batch.text_ids[b, : batch.text_lengths[b]]
        prompt = batch.prompt_codes[b, 0, : batch.prompt_lengths[b]]
        prompts.append(inference_prompt(model.vocab, text, prompt))
        phones.append(batch.phone_ids[b, : batch.phone_lengths[b]])
    return prompts, batch.text_lengths, phones


def _reference(model: TTSModel, prefix: torch.Tensor, phones: torch.Tensor, durations: torch.Tensor,
               scale: float) -> list[int]:
    """Greedy guided codes of one row, the slow way: every frame runs the whole conditioned sequence and the
    whole unconditioned one (no target phones) through the training forward, and takes the argmax of
    uncond + scale * (cond - uncond) over the codes."""
    frame_phone = torch.repeat_interleave(phones, durations)
    in_phone = torch.cat([torch.arange(int(d)) for d in durations])
    codes: list[int] = []
    for f in range(frame_phone.numel()):
        tokens = torch.cat([prefix, model.vocab.head_class_to_token(torch.tensor(codes, dtype=torch.long))])
        cond = torch.zeros(tokens.numel(), 2, dtype=torch.long)
        # slot prefix-1+g predicts frame g and reads frame g's phone and index
        cond[prefix.numel() - 1:, 0] = frame_phone[: f + 1]
        cond[prefix.numel() - 1:, 1] = in_phone[: f + 1]
        both = torch.stack([cond, torch.zeros_like(cond)])
        mask, pos = prefix_mask(torch.zeros(2, dtype=torch.long), tokens.numel())
        logits = model.ar.forward_with_attention(tokens[None].expand(2, -1), mask, pos, phone_inputs=both)[0]
        c, u = logits[:, -1].float()
        guided = u + scale * (c - u)
        codes.append(int(guided[: model.vocab.eos_class].argmax()))
    return codes


def test_guided_codes_match_the_two_sequence_reference(phone_config: ModelConfig, aligned_batch) -> None:
    torch.manual_seed(0)
    model = TTSModel(phone_config).eval()
    batch = aligned_batch(phone_config, [12, 9], seed=3)
    prompts, text_lengths, phones = _rows(model, batch)
    durations = [torch.arange(p.numel()) % 3 + 1 for p in phones]
    prefix_phones = [prefix_phone_inputs(p.numel()) for p in prompts]
    outs = {}
    for scale in (1.0, 3.0):
        outs[scale] = generate_ar(model, prompts, text_lengths, SamplingConfig(temperature=0.0,
                                                                               phone_guidance=scale),
                                  phone_seqs=phones, prefix_phones=prefix_phones, phone_durations=durations)
    with torch.inference_mode():
        for b in range(2):
            n = int(durations[b].sum())
            assert int(outs[3.0].lengths[b]) == n
            for scale, out in outs.items():
                expected = _reference(model, prompts[b], phones[b], durations[b], scale)
                assert out.codes[b, :n].tolist() == expected
    assert not torch.equal(outs[1.0].codes, outs[3.0].codes)  # guidance changed the codes


@pytest.mark.parametrize("path", ["recompute", "static"])
def test_guided_decode_paths_agree(phone_config: ModelConfig, aligned_batch, path: str, monkeypatch) -> None:
    """Sampled with a fixed seed and the advance head walking the phones: the KV cache, the whole-cache
    (static) step and full recompute give the same guided codes."""
    torch.manual_seed(0)
    model = TTSModel(phone_config).eval()
    batch = aligned_batch(phone_config, [14, 9], seed=4)
    prompts, text_lengths, phones = _rows(model, batch)
    kwargs = {"phone_seqs": phones, "prefix_phones": [prefix_phone_inputs(p.numel()) for p in prompts]}
    sampling = SamplingConfig(temperature=0.8, top_k=20, phone_guidance=2.0, max_phone_frames=4)
    reference = generate_ar(model, prompts, text_lengths, sampling, torch.Generator().manual_seed(7),
                            **kwargs)
    if path == "static":
        monkeypatch.setattr(ar_loop, "static_decode_shapes", lambda compile_step, device: True)
    out = generate_ar(model, prompts, text_lengths, sampling, torch.Generator().manual_seed(7),
                      use_cache=path != "recompute", **kwargs)
    assert torch.equal(out.codes, reference.codes) and torch.equal(out.lengths, reference.lengths)
    assert torch.equal(out.frame_phones, reference.frame_phones)


def test_a_guided_row_is_the_same_alone_and_in_a_batch(phone_config: ModelConfig, aligned_batch) -> None:
    torch.manual_seed(0)
    model = TTSModel(phone_config).eval()
    batch = aligned_batch(phone_config, [14, 9], seed=5)
    prompts, text_lengths, phones = _rows(model, batch)
    greedy = SamplingConfig(temperature=0.0, phone_guidance=2.5, max_phone_frames=4)

    def run(rows: list[int]):
        return generate_ar(model, [prompts[b] for b in rows], text_lengths[rows], greedy,
                           phone_seqs=[phones[b] for b in rows],
                           prefix_phones=[prefix_phone_inputs(prompts[b].numel()) for b in rows])

    both, alone = run([0, 1]), run([1])
    n = int(alone.lengths[0])
    assert int(both.lengths[1]) == n and torch.equal(both.codes[1, :n], alone.codes[0, :n])


def test_guidance_is_checked(tiny_model: TTSModel) -> None:
    with pytest.raises(ValueError, match="phone_guidance must be > 0"):
        SamplingConfig(phone_guidance=0.0)
    with pytest.raises(SynthesisError, match="phone_guidance must be > 0"):
        DecodeConfig().updated({"phone_guidance": -1.0})
    assert DecodeConfig().updated({"phone_guidance": 2.0}).sampling(50.0, 100, 10).phone_guidance == 2.0
    prompt = inference_prompt(tiny_model.vocab, torch.tensor([3, 4]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="needs a phone-aligned model"):
        generate_ar(tiny_model, [prompt], torch.tensor([2]), SamplingConfig(phone_guidance=2.0))


def test_phone_dropout_hides_only_target_phones(phone_config: ModelConfig, aligned_batch) -> None:
    """data.phone_dropout: a dropped row's target slots read no phone and its advance labels are ignored;
    slots before the target (a prompt with phones), the codes and the code labels stay; the loss stays
    finite when every row is dropped."""
    torch.manual_seed(0)
    model = TTSModel(phone_config)
    batch = aligned_batch(phone_config, [12, 9], seed=6)

    def built():
        lm = model.build_batch(batch, continuation_prob=0.5, generator=torch.Generator().manual_seed(1))
        lm.phone_inputs[:, 1] = torch.tensor([7, 0])  # a phone on a prefix slot, as a phoned prompt has
        return lm

    clean = built()
    assert torch.equal(drop_target_phones(built(), 0.0).phone_inputs, clean.phone_inputs)
    dropped = drop_target_phones(built(), 1.0)
    for b in range(2):
        start = int(clean.target_start[b]) - 1  # the slot that predicts frame 0
        assert torch.equal(dropped.phone_inputs[b, :start], clean.phone_inputs[b, :start])
        assert dropped.phone_inputs[b, start:].eq(0).all() and clean.phone_inputs[b, start:].ne(0).any()
        assert dropped.advance_labels[b].eq(IGNORE_INDEX).all()
    assert torch.equal(dropped.input_ids, clean.input_ids) and torch.equal(dropped.labels, clean.labels)
    losses = tts_loss(model(dropped), dropped)
    assert torch.isfinite(losses.loss) and float(losses.metrics["advance_loss"]) == 0.0
