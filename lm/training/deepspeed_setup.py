"""DeepSpeed plumbing for training: process group, the engine config, pickle-free checkpoint loading and
consolidated fp32 weights.

The `ds_configs/*.json` files hold system settings only (ZeRO stage, offload, precision, communication).
Batch size, gradient accumulation, clipping and the optimizer come from the training config and are
filled in here; a DeepSpeed file that sets them is refused, so there is one source of truth.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from lm.training.config import OptimConfig, TrainConfig

log = logging.getLogger(__name__)

# Keys that belong to the training config, not to a DeepSpeed system file.
OWNED_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "optimizer",
    "scheduler",
)


class DeepSpeedConfigError(ValueError):
    """A DeepSpeed JSON file that cannot be used; the message names the file and the key."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(timeout_minutes: float = 30.0) -> tuple[int, int, int]:
    """Join (or create) the process group: nccl with CUDA, gloo on CPU. Works under the `deepspeed` and
    `torchrun` launchers and as one plain `python` process. Returns (rank, world_size, local_rank)."""
    import deepspeed

    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        # a plain `python scripts/train.py`: a world of one
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                               timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def training_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on a GPU that supports it, else 'fp32'. bf16 on CPU is refused (slow, and CPU
    runs are for tests and demos)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type != "cuda":
        raise ValueError("precision=bf16 needs a GPU; use precision=fp32 (or auto) on CPU")
    return precision


def load_ds_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DeepSpeedConfigError(f"DeepSpeed config {path} does not exist") from err
    except json.JSONDecodeError as err:
        raise DeepSpeedConfigError(f"DeepSpeed config {path}: invalid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DeepSpeedConfigError(f"DeepSpeed config {path}: the top level must be an object")
    owned = [k for k in OWNED_KEYS if k in data]
    if owned:
        raise DeepSpeedConfigError(
            f"DeepSpeed config {path} sets {owned}: batch size, accumulation, clipping, optimizer and "
            f"schedule come from the training config (e.g. gradient_accumulation_steps=4, optim.lr=3e-4); "
            f"remove them from the JSON"
        )
    return data


def _optimizer_section(optim: OptimConfig, offload_optimizer: bool, device: torch.device) -> dict:
    """AdamW from our settings. With optimizer offload DeepSpeed uses its CPU Adam (its own requirement);
    otherwise torch's AdamW (fused kernel on GPU, foreach on CPU), which needs no compiled extension."""
    params: dict = {"lr": optim.lr, "betas": list(optim.betas), "eps": optim.eps,
                    "weight_decay": optim.weight_decay}
    if not offload_optimizer:
        params["torch_adam"] = True
        if device.type == "cuda":
            params["fused"] = True
        else:
            params["foreach"] = True
    return {"type": "AdamW", "params": params}


def build_ds_config(system: dict, cfg: TrainConfig, precision: str, device: torch.device) -> dict:
    """The full DeepSpeed config: the system file with 'auto' resolved + what the training config owns."""
    ds = json.loads(json.dumps(system))  # deep copy
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    bf16 = precision == "bf16"
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": bf16}
    fp16 = ds.get("fp16", {})
    if fp16.get("enabled") not in (False, "auto", None):
        raise DeepSpeedConfigError("fp16 is not supported (it overflows in attention logits); use bf16")
    ds["fp16"] = {**fp16, "enabled": False}
    if device.type != "cuda":
        # CPU: no pinned memory, and no offload (the tensors already live in host memory)
        for key in ("offload_optimizer", "offload_param"):
            if key in zero:
                log.warning("ignoring zero_optimization.%s on CPU (no accelerator to offload from)", key)
                zero.pop(key)
    offload_optimizer = zero.get("offload_optimizer", {}).get("device", "none") not in ("none", None)
    ds["train_micro_batch_size_per_gpu"] = 1  # batches are built by frame budget; DeepSpeed only counts
    ds["gradient_accumulation_steps"] = cfg.gradient_accumulation_steps
    ds["gradient_clipping"] = cfg.optim.grad_clip
    ds["optimizer"] = _optimizer_section(cfg.optim, offload_optimizer, device)
    ds.setdefault("steps_per_print", 1 << 30)  # we log ourselves
    ds.setdefault("wall_clock_breakdown", False)
    if ds.get("communication_data_type") is None:
        ds.pop("communication_data_type", None)
    return ds


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


# --------------------------------------------------------------------------------- pickle-free checkpoints


def _deepspeed_safe_globals() -> list:
    """Classes DeepSpeed itself puts into its checkpoint files: allowed for the weights-only unpickler
    (they are plain records; nothing else is)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, fragment_address, ZeroStageEnum]


@contextlib.contextmanager
def torch_load_weights_only() -> Iterator[None]:
    """Inside the block every `torch.load` reads weights-only (DeepSpeed's record classes allowed), whatever
    its caller asks: for DeepSpeed utilities such as `zero_to_fp32` that call torch.load(weights_only=False)
    themselves. A pickle payload then raises instead of running."""
    original, allowed = torch.load, _deepspeed_safe_globals()

    def load(f, map_location=None, **_ignored):  # mmap / weights_only=False requests are overridden
        with torch.serialization.safe_globals(allowed):
            return original(f, map_location=map_location, weights_only=True)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds pickled objects outside the allow-list: refused, never executed."""


def safe_torch_load(path: str | Path, map_location=None):
    """torch.load(weights_only=True) with DeepSpeed's record classes allowed; any other pickled object is
    refused with an error that names the file and the offending globals."""
    try:
        with torch.serialization.safe_globals(_deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # the weights-only unpickler raises UnpicklingError / RuntimeError
        if "Weights only load failed" in str(err) or isinstance(err, __import__("pickle").UnpicklingError):
            try:
                bad = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception:  # noqa: BLE001 - best effort for the message
                bad = ["<unreadable>"]
            raise UnsafeCheckpointError(
                f"{path}: refusing to unpickle {bad}: outside the allow-list of DeepSpeed record classes "
                f"(loading it could execute arbitrary code)"
            ) from err
        raise


@contextlib.contextmanager
def weights_only_checkpoint_loading(engine) -> Iterator[None]:
    """Make `engine.load_checkpoint` read every file with the weights-only unpickler.

    DeepSpeed's TorchCheckpointEngine calls torch.load(weights_only=False); we swap its `load` for
    `safe_torch_load` for the duration of the call."""
    ckpt_engine = engine.checkpoint_engine
    original = ckpt_engine.load

    def load(path: str, map_location=None):
        return safe_torch_load(path, map_location=map_location)

    ckpt_engine.load = load
    try:
        yield
    finally:
        ckpt_engine.load = original


# --------------------------------------------------------------------------------- consolidated weights


def full_fp32_state_dict(engine) -> dict[str, torch.Tensor]:
    """The model's full state dict with fp32 master weights, on CPU, under any ZeRO stage.

    Collective: every rank must call it (ZeRO partitions are gathered); every rank gets the result."""
    from deepspeed.utils import safe_get_full_fp32_param

    module = engine.module
    gathered: dict[int, torch.Tensor] = {}
    by_name: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) not in gathered:  # tied weights are gathered once
            full = safe_get_full_fp32_param(param)
            if full is None:  # not wrapped by a ZeRO / bf16 optimizer: the parameter is its own master
                full = param.detach()
            gathered[id(param)] = full.detach().float().cpu().clone()
        by_name[name] = gathered[id(param)]
    state = {}
    for name, value in module.state_dict().items():
        if name in by_name:
            state[name] = by_name[name]
        else:  # persistent buffers
            value = value.detach().cpu().clone()
            state[name] = value.float() if value.is_floating_point() else value
    return state
