"""lm/training/throughput.py: the training-FLOPs estimate against a hand count of the tiny preset and against
the FLOPs PyTorch's own counter measures in a real forward + backward; the MFU the trainer logs from it; the
per-GPU peak table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lm.model.config import get_preset
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.training.throughput import FlopCounter, matmul_params, peak_tflops


def hand_count(cfg) -> tuple[int, int]:
    """Matmul weights of the AR and the NAR, counted from the architecture: per Llama layer the q / o
    projections (h x h), k / v (h x kv_heads * head_dim), the SwiGLU MLP (3 x h x I) and two RMSNorm
    vectors; a final RMSNorm; the AR's code head (h x (K + <eos>)). Embedding tables are left out, and the
    NAR's classifier is its tied code-embedding table."""

    def layers(h: int, n: int, heads: int, kv: int, inter: int) -> int:
        kv_width = kv * (h // heads)
        return n * (2 * h * h + 2 * h * kv_width + 3 * h * inter + 2 * h) + h

    ar = layers(cfg.ar_hidden_size, cfg.ar_num_layers, cfg.ar_num_heads, cfg.ar_num_kv_heads,
                cfg.ar_intermediate_size) + cfg.ar_hidden_size * (cfg.codebook_size + 1)
    nar = layers(cfg.nar_hidden_size, cfg.nar_num_layers, cfg.nar_num_heads, cfg.nar_num_kv_heads,
                 cfg.nar_intermediate_size)
    return ar, nar


@pytest.fixture()
def model() -> TTSModel:
    torch.manual_seed(0)
    return TTSModel(get_preset("tiny"))


def test_matmul_weights_are_the_hand_count(model) -> None:
    ar, nar = hand_count(model.config)
    # tiny: h = 64, 2 layers, 4 heads of 16 (2 kv heads), I = 128, K = 1024
    assert (ar, nar) == (2 * (2 * 4096 + 2 * 2048 + 3 * 8192 + 128) + 64 + 64 * 1025,
                         2 * (2 * 4096 + 2 * 2048 + 3 * 8192 + 128) + 64) == (139_648, 74_048)
    assert (matmul_params(model.ar), matmul_params(model.nar)) == (ar, nar)


def test_flops_of_a_padded_batch_count_each_row_by_its_own_length(model) -> None:
    """6 FLOPs per weight per token + 12 * layers * hidden * S^2 per sequence of S tokens, for the AR and
    the NAR, + 6 * K * hidden per NAR target frame (its tied head); padding counts for nothing."""
    mask = torch.zeros(2, 13, dtype=torch.bool)
    mask[0, :10] = mask[1, :13] = True  # AR rows of 10 and 13 tokens
    nar = SimpleNamespace(text_lengths=torch.tensor([3, 4]), prompt_lengths=torch.tensor([5, 2]),
                          frame_lengths=torch.tensor([4, 6]))  # NAR rows of 12 and 12 tokens
    batch = SimpleNamespace(attention_mask=mask, nar=nar)
    ar = 6 * 139_648 * (10 + 13) + 12 * 2 * 64 * (10**2 + 13**2)
    nar_flops = 6 * 74_048 * (12 + 12) + 12 * 2 * 64 * (12**2 + 12**2) + 6 * 1024 * 64 * (4 + 6)
    assert ar + nar_flops == 34_722_048
    assert FlopCounter(model)(batch) == 34_722_048
    assert FlopCounter(model)(SimpleNamespace(attention_mask=mask, nar=None)) == ar  # no NAR targets


def test_the_estimate_is_what_pytorch_counts_in_a_real_training_step(model, make_batch) -> None:
    """torch's FlopCounterMode over a forward + backward (attention in the math kernel, so its matmuls are
    visible) on a one-row batch (no padding): the estimate counts exactly that, plus 6 FLOPs per token for
    each RMSNorm weight, which the estimate treats like a matmul weight."""
    cfg = model.config
    batch = make_batch(cfg, [7], [40], [20], seed=0)
    lm = model.build_batch(batch, continuation_prob=0.0, generator=torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
        tts_loss(model(lm), lm).loss.backward()
    nar = lm.nar
    tokens = int(lm.attention_mask.sum()) + int(nar.text_lengths.sum() + nar.prompt_lengths.sum()
                                                 + nar.frame_lengths.sum())
    norm_weights = (2 * cfg.ar_num_layers + 1) * cfg.ar_hidden_size  # tiny: the same for the NAR
    assert norm_weights == (2 * cfg.nar_num_layers + 1) * cfg.nar_hidden_size
    assert FlopCounter(model)(lm) - 6 * norm_weights * tokens == counted.get_total_flops()


def test_mfu_is_flops_per_second_over_the_peak_of_every_rank(monkeypatch) -> None:
    """The trainer's logged MFU (lm.training.trainer.Trainer._reduce_window): all-reduced FLOPs / seconds /
    (peak TFLOP/s * 1e12 * ranks). One process stands for rank 0 of 2 here: all_reduce leaves its sums as they
    are."""
    from lm.training.metrics import Window
    from lm.training.trainer import Trainer

    monkeypatch.setattr("lm.training.metrics.dist.all_reduce", lambda tensor, *args, **kwargs: None)
    trainer = SimpleNamespace(peak=989.0, world_size=2, device=torch.device("cpu"), tokens_seen=0)
    window = Window(steps=4, micro_batches=4, values={"loss": torch.tensor(24.0)}, tokens=8000, frames=2000,
                    flops=3.0e15, seconds=10.0, grad_norm=8.0)
    metrics = Trainer._reduce_window(trainer, window)
    assert metrics["mfu"] == pytest.approx(3.0e15 / 10.0 / (989.0e12 * 2))  # = 0.1517
    assert metrics["tokens_per_s"] == pytest.approx(800.0) and metrics["seconds_per_step"] == 2.5
    assert metrics["loss"] == 6.0 and metrics["grad_norm"] == 2.0 and trainer.tokens_seen == 8000
    trainer.peak = None  # CPU: no peak, no MFU
    assert "mfu" not in Trainer._reduce_window(trainer, window)


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H200", 989.0),
    ("NVIDIA H100 NVL", 835.0),  # not the plain "H100" entry
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 80GB HBM3", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L40S", 362.0),  # not "L40", not "L4"
    ("NVIDIA L4", 121.0),
    ("NVIDIA GeForce RTX 4090", 165.0),
    ("Some Future GPU", None),
])
def test_peak_tflops_by_gpu_name(monkeypatch, name, peak) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_tflops(torch.device("cuda", 0)) == peak
    assert peak_tflops(torch.device("cuda", 0), override=123.0) == 123.0
    assert peak_tflops(torch.device("cpu")) is None
