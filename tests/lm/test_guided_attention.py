"""Guided attention: recomputed probabilities equal the model's real attention, the penalty map follows the
layout of both AR modes, and the loss trains the guided heads."""

from __future__ import annotations

import pytest
import torch

from lm.model.losses import guided_attention_loss, guided_attention_weights, tts_loss
from lm.model.vocab import END_TEXT
from lm.training.config import ConfigError, config_from_dict


def _lm_batch(model, config, make_batch, continuation_prob: float, seed: int = 0):
    raw = make_batch(config, [5, 9, 3], [12, 7, 20], [4, 6, 5], seed=seed)
    return model.build_batch(raw, continuation_prob, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer", [0, 1])
def test_recomputed_probabilities_equal_eager_attention(tiny_model, tiny_config, make_batch, layer):
    lm = _lm_batch(tiny_model, tiny_config, make_batch, 0.5)
    heads = 3  # tiny: 4 query heads over 2 KV heads, so head 2 reads the second KV head
    with torch.no_grad():
        _, probs, _, _ = tiny_model.ar.forward_with_attention(
            lm.input_ids, lm.attention_mask, lm.position_ids, layer, heads
        )
        tiny_model.ar.model.config._attn_implementation = "eager"
        eager = tiny_model.ar.model(
            input_ids=lm.input_ids,
            attention_mask=lm.attention_mask,
            position_ids=lm.position_ids,
            output_attentions=True,
            use_cache=False,
        ).attentions[layer][:, :heads]
    assert probs.shape == eager.shape
    valid = lm.attention_mask[:, None, :, None].expand_as(probs)  # padded query rows are masked elsewhere
    torch.testing.assert_close(probs[valid], eager[valid].float(), atol=1e-5, rtol=1e-4)


def test_plain_forward_is_unchanged_and_returns_no_probabilities(tiny_model, tiny_config, make_batch):
    lm = _lm_batch(tiny_model, tiny_config, make_batch, 0.5)
    with torch.no_grad():
        plain = tiny_model(lm)
        guided = tiny_model(lm, attention_layer=1, attention_heads=2)
    assert plain.guided_attention is None
    assert guided.guided_attention.shape == (3, 2, *lm.input_ids.shape[1:], lm.input_ids.shape[1])
    torch.testing.assert_close(plain.ar_logits, guided.ar_logits)
    assert "align_loss" not in tts_loss(plain, lm).metrics


@pytest.mark.parametrize("continuation_prob", [0.0, 1.0])
def test_penalty_map_follows_the_layout(tiny_model, tiny_config, make_batch, continuation_prob):
    lm = _lm_batch(tiny_model, tiny_config, make_batch, continuation_prob)
    weights, rows = guided_attention_weights(lm, sigma=0.2)
    for b, (text_len, frames) in enumerate([(5, 12), (9, 7), (3, 20)]):
        start = int(lm.target_start[b]) - 1
        assert rows[b].nonzero().flatten().tolist() == list(range(start, start + frames))
        assert int((lm.input_ids[b] == END_TEXT).nonzero()[0]) == text_len + 1
        first, last = weights[b, start], weights[b, start + frames - 1]
        # the first frame is cheapest on the first text piece, the last frame on the last one
        assert int(first[1 : 1 + text_len].argmin()) == 0
        assert int(last[1 : 1 + text_len].argmin()) == text_len - 1
        # every key that is not text costs 1: <bos>, </text>, the prompt, earlier audio
        not_text = torch.ones(weights.shape[-1], dtype=torch.bool)
        not_text[1 : 1 + text_len] = False
        assert torch.all(weights[b, start][not_text] == 1.0)


def test_loss_is_low_for_a_diagonal_head_and_high_for_one_reading_audio(tiny_model, tiny_config, make_batch):
    lm = _lm_batch(tiny_model, tiny_config, make_batch, 0.0)
    weights, rows = guided_attention_weights(lm, sigma=0.2)
    bsz, seq = lm.input_ids.shape
    diagonal = torch.zeros(bsz, 1, seq, seq)
    diagonal.scatter_(-1, weights.argmin(dim=-1, keepdim=True)[:, None], 1.0)  # all mass on the best key
    text_keys = (weights < 1).any(dim=1, keepdim=True).float()  # [B, 1, S]: the text pieces
    uniform_text = (text_keys / text_keys.sum(-1, keepdim=True)).expand(bsz, seq, seq)[:, None]
    on_self = torch.eye(seq).expand(bsz, 1, seq, seq)
    diagonal_loss = float(guided_attention_loss(diagonal, lm))
    assert diagonal_loss < 0.1
    assert float(guided_attention_loss(uniform_text, lm)) > 2 * diagonal_loss
    assert float(guided_attention_loss(on_self, lm)) == pytest.approx(1.0)


def test_guided_loss_trains_the_heads(tiny_model, tiny_config, make_batch):
    lm = _lm_batch(tiny_model, tiny_config, make_batch, 0.25)
    opt = torch.optim.Adam(tiny_model.ar.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = tiny_model(lm, attention_layer=1, attention_heads=2)
        loss = tts_loss(out, lm, align_weight=1.0)
        opt.zero_grad()
        (loss.loss - loss.ar_loss - loss.nar_loss).backward()  # the guided term alone
        opt.step()
        losses.append(float(loss.metrics["align_loss"]))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_config_rejects_a_layer_the_model_does_not_have():
    with pytest.raises(ConfigError, match="align.layer"):
        config_from_dict({"preset": "tiny", "align": {"weight": 1.0, "layer": 2}})
    cfg = config_from_dict({"preset": "tiny", "align": {"weight": 1.0, "layer": 1, "heads": 4}})
    assert cfg.align.heads == 4
