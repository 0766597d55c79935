"""The CPU decode-speed measures of lm/inference/decode_steps.py change no result: the column-major layout of
wide Linear weights keeps values, parameter objects and trainability; the compiled step's cache is
bucketed."""

from __future__ import annotations

import torch

from lm.checkpoint import load_model, save_model
from lm.inference.ar_loop import generate_ar
from lm.inference.decode_steps import cache_slots, cpu_decode_layout
from lm.inference.sampling import SamplingConfig
from lm.model.losses import tts_loss
from lm.model.sequence import inference_prompt


def _wide_linears(model):
    return [
        (name, m)
        for name, m in model.ar.named_modules()
        if isinstance(m, torch.nn.Linear) and m.out_features > m.in_features
    ]


def test_cpu_layout_keeps_values_outputs_and_training(tiny_model, tiny_config, make_batch, tmp_path):
    tiny_model.eval()
    batch = make_batch(tiny_config, [5, 7], [6, 4], [9, 6], seed=1)
    prompts = [
        inference_prompt(
            tiny_model.vocab,
            batch.text_ids[b, : batch.text_lengths[b]],
            batch.prompt_codes[b, 0, : batch.prompt_lengths[b]],
        )
        for b in range(2)
    ]
    wide = _wide_linears(tiny_model)
    assert wide, "the tiny preset has wide projections (gate/up, code head)"
    before = {name: (m.weight, m.weight.detach().clone()) for name, m in wide}
    with torch.inference_mode():
        logits_before = tiny_model.ar(prompts[0][None])

    sampling = SamplingConfig(temperature=0.0, max_new_frames=12, min_new_frames=12)
    first = generate_ar(tiny_model, prompts, batch.text_lengths, sampling)  # applies the layout
    for name, m in wide:
        param, values = before[name]
        assert m.weight is param, f"{name}: the parameter object must survive (optimizers hold it)"
        assert m.weight.t().is_contiguous() and not m.weight.is_contiguous(), name
        assert torch.equal(m.weight, values), name
    with torch.inference_mode():
        torch.testing.assert_close(tiny_model.ar(prompts[0][None]), logits_before, rtol=1e-5, atol=1e-5)
    cpu_decode_layout(tiny_model.ar)  # idempotent
    again = generate_ar(tiny_model, prompts, batch.text_lengths, sampling)
    assert torch.equal(first.codes, again.codes)

    # training after generation: the relaid weights are ordinary (non-inference) tensors with gradients
    tiny_model.train()
    lm_batch = tiny_model.build_batch(batch, continuation_prob=0.0)
    loss = tts_loss(tiny_model(lm_batch), lm_batch).loss
    loss.backward()
    assert loss.isfinite()
    for name, m in wide:
        assert m.weight.grad is not None and m.weight.grad.shape == m.weight.shape, name

    # and the checkpoint round trip is unaffected (save_model writes contiguous copies)
    save_model(tiny_model, tiny_config, tmp_path / "export")
    loaded = load_model(tmp_path / "export")
    for name, m in wide:
        torch.testing.assert_close(loaded.ar.get_submodule(name).weight, m.weight.detach())


def test_compiled_cache_slots_are_bucketed():
    assert cache_slots(662, compile_step=False, limit=4096) == 662
    assert cache_slots(303, compile_step=True, limit=4096) == 1024
    assert cache_slots(662, compile_step=True, limit=4096) == 1024  # one cache (one compile) for both
    assert cache_slots(1025, compile_step=True, limit=4096) == 2048
    assert cache_slots(3000, compile_step=True, limit=2500) == 3000  # never below what is needed
    assert cache_slots(2100, compile_step=True, limit=2500) == 2500


def test_cpu_layout_leaves_views_into_flat_buffers_alone(tiny_model):
    """DeepSpeed ZeRO-1/2 keeps trainable weights as views into one flat buffer: re-laying one out would
    give it new storage that the optimizer no longer updates."""
    name, linear = _wide_linears(tiny_model)[0]
    flat = torch.zeros(linear.weight.numel() + 10)
    flat[: linear.weight.numel()] = linear.weight.detach().reshape(-1)
    with torch.no_grad():
        linear.weight.data = flat[: linear.weight.numel()].view_as(linear.weight)
    cpu_decode_layout(tiny_model.ar)
    assert linear.weight.data_ptr() == flat.data_ptr(), f"{name} left its flat buffer"
    others = [m for n, m in _wide_linears(tiny_model) if n != name]
    assert others and all(m.weight.t().is_contiguous() for m in others)
