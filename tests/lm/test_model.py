"""TTSModel forward / loss, AR causality, the lean cached path vs the HF forward, NAR properties, LoRA."""

from __future__ import annotations

import copy

import peft  # a hard dependency (pyproject): a broken install must fail, not skip
import torch

from lm.inference.decode_steps import prefill, recompute_logits
from lm.model.batch import nar_inputs
from lm.model.losses import tts_loss
from lm.model.sequence import pad_left
from lm.model.vocab import IGNORE_INDEX


def test_forward_logits_align_with_labels_and_loss_backprops(tiny_model, tiny_config, make_batch):
    batch = tiny_model.build_batch(make_batch(tiny_config, [5, 3], [9, 4], [6, 2]), continuation_prob=0.5)
    out = tiny_model(batch)
    assert out.ar_logits.shape == (*batch.labels.shape, tiny_config.codebook_size + 1)
    assert out.nar_logits.shape == (2, 9, tiny_config.codebook_size)
    losses = tts_loss(out, batch)
    # a random init predicts ~uniformly: CE close to log(V)
    assert abs(losses.ar_loss.item() - torch.log(torch.tensor(1025.0)).item()) < 0.5
    assert abs(losses.nar_loss.item() - torch.log(torch.tensor(1024.0)).item()) < 0.5
    assert set(losses.metrics) == {"loss", "ar_loss", "ar_acc", "nar_loss", "nar_acc"}
    losses.loss.backward()
    assert tiny_model.ar.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert tiny_model.ar.code_head.weight.grad.abs().sum() > 0
    assert tiny_model.nar.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0
    # only labelled positions carry loss: perturbing logits where labels are ignored changes nothing
    logits = out.ar_logits.detach().clone()
    logits[batch.labels == IGNORE_INDEX] += torch.randn_like(logits[batch.labels == IGNORE_INDEX])
    out.ar_logits = logits
    assert torch.isclose(tts_loss(out, batch).ar_loss, losses.ar_loss)


def test_ar_gradient_causality(tiny_model):
    """Output k has exactly zero gradient from inputs after k."""
    tiny_model.eval()
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = tiny_model.ar.model.embed_tokens.register_forward_hook(keep)
    ids = torch.randint(16, tiny_model.vocab.size, (1, 12))
    logits = tiny_model.ar(ids)
    handle.remove()
    for k in (0, 5, 11):
        captured["emb"].grad = None
        logits[0, k].sum().backward(retain_graph=True)
        grad = captured["emb"].grad[0].abs().sum(-1)
        assert (grad[k + 1 :] == 0).all(), f"position {k} sees the future"
        assert (grad[: k + 1] > 0).all(), f"position {k} does not see its past"


def test_cached_prefill_and_decode_equal_the_hf_forward(tiny_model):
    """The lean static-cache path (left-padded batch) reproduces the stock HF Llama forward."""
    tiny_model.eval()
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(16, tiny_model.vocab.size, (n,), generator=g) for n in (9, 4, 7)]
    tokens, pads = pad_left(seqs)
    with torch.inference_mode():
        tiny_model.ar.setup_cache(3, 32)
        cached, no_delayed, no_advance = prefill(tiny_model.ar, tokens, pads)
        assert no_delayed is None and no_advance is None  # ar_codebooks = 1, alignment = none
        for b, s in enumerate(seqs):
            ref = tiny_model.ar(s[None])[0, -1]  # one row alone, no padding
            torch.testing.assert_close(cached[b], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            cached, recompute_logits(tiny_model.ar, tokens, pads)[0], atol=1e-5, rtol=1e-5
        )


def test_nar_is_bidirectional_ignores_padding_and_depends_on_stage(tiny_model, tiny_config, make_batch):
    tiny_model.eval()
    nar = tiny_model.nar
    batch = make_batch(tiny_config, [5, 3], [9, 4], [6, 2])

    def inputs(b, stage, codes=None):
        return nar_inputs(
            batch.text_ids[b],
            batch.text_lengths[b],
            batch.prompt_codes[b],
            batch.prompt_lengths[b],
            batch.codes[b] if codes is None else codes,
            batch.frame_lengths[b],
            torch.full((len(b),), stage),
        )

    rows = torch.tensor([0, 1])
    both = nar(inputs(rows, 3))
    alone = nar(inputs(torch.tensor([1]), 3))
    n = int(batch.frame_lengths[1])
    torch.testing.assert_close(both[1, :n], alone[0, :n], atol=1e-5, rtol=1e-5)  # padding does not leak
    # codebooks >= stage are not inputs; codebooks < stage are
    codes = batch.codes[rows].clone()
    codes[:, 3:] = torch.randint(0, tiny_config.codebook_size, codes[:, 3:].shape)
    torch.testing.assert_close(nar(inputs(rows, 3, codes)), both)
    codes[:, 1, 5] = (codes[:, 1, 5] + 1) % tiny_config.codebook_size
    changed = nar(inputs(rows, 3, codes))
    assert not torch.allclose(changed[0, 0], both[0, 0])  # frame 0 sees frame 5: bidirectional
    assert not torch.allclose(nar(inputs(rows, 2))[0], both[0])  # the stage embedding matters


def test_activation_checkpointing_gives_the_same_gradients(tiny_model, tiny_config, make_batch):
    batch = tiny_model.build_batch(make_batch(tiny_config, [4, 6], [7, 5], [3, 5]), continuation_prob=0.5)
    tiny_model.train()
    twin = copy.deepcopy(tiny_model)
    twin.set_activation_checkpointing(True)
    assert twin.ar.model.layers[0].gradient_checkpointing and twin.nar.model.layers[0].gradient_checkpointing
    for model in (tiny_model, twin):
        tts_loss(model(batch), batch).loss.backward()
    for (name, p), q in zip(tiny_model.named_parameters(), twin.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_lora_targets_both_parts_and_the_cached_path_uses_it(tiny_model):
    tiny_model.eval()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = peft.inject_adapter_in_model(peft.LoraConfig(r=4, target_modules=targets), tiny_model)
    wrapped = [n for n, _ in model.named_modules() if n.endswith("q_proj.lora_A")]
    assert any(n.startswith("ar.") for n in wrapped) and any(n.startswith("nar.") for n in wrapped)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a non-trivial adapter
    seq = torch.randint(16, model.vocab.size, (1, 10))
    tokens, pads = pad_left([seq[0]])
    with torch.inference_mode():
        model.ar.setup_cache(1, 16)
        torch.testing.assert_close(
            prefill(model.ar, tokens, pads)[0], model.ar(seq)[:, -1], atol=1e-5, rtol=1e-5
        )
