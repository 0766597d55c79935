"""Training FLOPs of one batch and model FLOPs utilisation (MFU).

FLOPs follow the PaLM / nanoGPT estimate: 6 FLOPs per weight per token for forward + backward over the
matmul weights (embedding lookups excluded), plus 12 * layers * hidden * S per token for attention scores and
values in a sequence of S tokens. Padding is not counted: MFU measures useful work.
"""

from __future__ import annotations

import torch
from torch import nn

from lm.model.batch import LMBatch
from lm.model.model import TTSModel

# Dense bf16 tensor-core peak per device (TFLOP/s), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """Per-device bf16 peak, from `override` or the GPU name; None on CPU or an unknown GPU."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():  # ordered: specific names before their prefixes
        if key in name:
            return value
    return None


def matmul_params(module: nn.Module | None) -> int:
    """Weights that take part in matmuls: everything except embedding tables."""
    if module is None:
        return 0
    embed = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in embed)


class FlopCounter:
    """Training FLOPs (forward + backward) of LMBatches for one TTSModel."""

    def __init__(self, model: TTSModel) -> None:
        cfg = model.config
        self.ar_params = matmul_params(model.ar)
        self.nar_params = matmul_params(model.nar)
        self.ar_attn = 12 * cfg.ar_num_layers * cfg.ar_hidden_size
        self.nar_attn = 12 * cfg.nar_num_layers * cfg.nar_hidden_size
        # the NAR's tied output head: target frames x codebook_size x hidden, forward + backward
        self.nar_head = 6 * cfg.codebook_size * cfg.nar_hidden_size
        self.has_nar = model.nar is not None

    def __call__(self, batch: LMBatch) -> float:
        ar_lengths = batch.attention_mask.sum(1).double()
        flops = float((6 * self.ar_params * ar_lengths + self.ar_attn * ar_lengths**2).sum())
        if self.has_nar and batch.nar is not None:
            nar = batch.nar
            nar_lengths = (nar.text_lengths + nar.prompt_lengths + nar.frame_lengths).double()
            flops += float((6 * self.nar_params * nar_lengths + self.nar_attn * nar_lengths**2).sum())
            flops += float(self.nar_head * nar.frame_lengths.sum())
        return flops
