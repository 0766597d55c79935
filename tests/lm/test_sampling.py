"""Sampling functions on known logits."""

from __future__ import annotations

import math

import pytest
import torch

from lm.inference.sampling import apply_repetition_penalty, apply_top_k, apply_top_p, as_row_tensor, sample

NEG = float("-inf")


def knobs(n, temperature=1.0, top_k=0, top_p=1.0):
    return (
        as_row_tensor(temperature, n, torch.float32, "cpu"),
        as_row_tensor(top_k, n, torch.long, "cpu"),
        as_row_tensor(top_p, n, torch.float32, "cpu"),
    )


def test_top_k_keeps_the_k_largest_and_zero_means_off():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    out = apply_top_k(logits, torch.tensor([[2], [0]]))
    assert out[0].tolist() == [NEG, 4.0, 3.0, NEG]
    assert out[1].tolist() == logits[1].tolist()


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3)
    logits = probs.log()
    out = apply_top_p(logits, torch.tensor([[0.7], [0.5], [1.0]]))
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]  # 0.5 < 0.7 -> needs the 2nd
    assert torch.isfinite(out[1]).tolist() == [True, False, False, False]  # 0.5 reaches 0.5
    assert torch.isfinite(out[2]).all()
    # order independence: the same classes survive when the logits are permuted
    perm = torch.tensor([2, 0, 3, 1])
    out_perm = apply_top_p(logits[:1, perm], torch.tensor([[0.7]]))
    assert torch.isfinite(out_perm[0]).tolist() == [False, True, False, True]


def test_repetition_penalty_values():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    counts = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    out = apply_repetition_penalty(logits, counts, torch.tensor([[2.0]]))
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0]]
    assert torch.equal(apply_repetition_penalty(logits, counts, torch.tensor([[1.0]])), logits)


def test_greedy_rows_take_the_argmax_and_sampled_rows_follow_the_distribution():
    logits = torch.tensor([[0.0, math.log(3.0), math.log(6.0)]]).expand(20000, 3).contiguous()
    temperature = torch.full((20000, 1), 1.0)
    temperature[:10] = 0.0  # greedy rows mixed into the same call
    _, top_k, top_p = knobs(20000)
    g = torch.Generator().manual_seed(0)
    out = sample(logits, temperature, top_k, top_p, g)
    assert (out[:10] == 2).all()
    freq = torch.bincount(out[10:], minlength=3).float() / out[10:].numel()
    assert torch.allclose(freq, torch.tensor([0.1, 0.3, 0.6]), atol=0.015), freq


def test_temperature_sharpens_and_top_k_one_is_greedy():
    logits = torch.randn(4000, 16, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    out = sample(logits, *knobs(4000, temperature=1.0, top_k=1), g)
    assert torch.equal(out, logits.argmax(-1))
    cold = sample(logits, *knobs(4000, temperature=0.05), g)
    warm = sample(logits, *knobs(4000, temperature=1.0), g)
    agree_cold = (cold == logits.argmax(-1)).float().mean()
    agree_warm = (warm == logits.argmax(-1)).float().mean()
    assert agree_cold > 0.9 and agree_warm < 0.6


def test_sampling_is_reproducible_under_a_seed():
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(3))
    k = knobs(8, temperature=1.0, top_k=20, top_p=0.9)
    a = sample(logits, *k, torch.Generator().manual_seed(7))
    b = sample(logits, *k, torch.Generator().manual_seed(7))
    c = [sample(logits, *k, torch.Generator().manual_seed(s)) for s in range(8, 12)]
    assert torch.equal(a, b)
    assert any(not torch.equal(a, x) for x in c)
    # never outside the top-k / nucleus
    allowed = torch.isfinite(apply_top_p(apply_top_k(logits, k[1]), k[2]))
    assert allowed.gather(1, a[:, None]).all()


def test_per_row_knob_shapes():
    assert as_row_tensor([0.5, 1.0], 2, torch.float32, "cpu").shape == (2, 1)
    assert as_row_tensor(0.5, 3, torch.float32, "cpu").tolist() == [[0.5]] * 3
    with pytest.raises(ValueError, match="3 values for a batch of 2"):
        as_row_tensor([1, 2, 3], 2, torch.float32, "cpu")
