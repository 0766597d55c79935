"""Training checkpoints of `codec.training.trainer` (full fp32 state + optimizer + RNG, written atomically),
and `init_from_export`: start a new run from an exported codec checkpoint directory (`Codec.save_pretrained`).

Shape letters: none (no tensors are reshaped here).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from codec.base import WEIGHTS_FILE, read_export_config

log = logging.getLogger(__name__)


# ---- run checkpoints -------------------------------------------------------------------------------------
def save_checkpoint(directory: Path, model: RVQCodec, optimizer: torch.optim.Optimizer, state: dict,
                    gen: torch.Generator, heads: dict[str, torch.nn.Module] | None = None) -> None:
    """Write to DIR.tmp, then swap it in: a kill mid-write leaves the previous checkpoint intact.
    `heads`: training-only modules (e.g. the phone head), each saved as DIR/NAME.safetensors."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    for name, head in (heads or {}).items():
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(tmp / f"{name}.safetensors"))
    # Python's `random` draws the speed changes and quantizer dropout: its state too, or a resumed run
    # would draw other ones than the uninterrupted run (the Mersenne Twister's 625 words; weights_only
    # loading takes a list of ints)
    rng = {"torch": torch.get_rng_state(), "data": gen.get_state().cpu(),
           "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    swap_in(tmp, directory)


def swap_in(tmp: Path, directory: Path) -> None:
    """Replace `directory` with the fully written `tmp` (the old one is removed only after the rename)."""
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path, model: RVQCodec, optimizer: torch.optim.Optimizer,
                    gen: torch.Generator, heads: dict[str, torch.nn.Module] | None = None) -> dict:
    """Restore model (+ optimizer and RNG when trainer.pt is there) -> the saved state dict.

    Without trainer.pt (e.g. only the weights were carried over) training goes on with a fresh optimizer
    and a new warm-up, which the returned state records as `rewarm_from`.
    """
    state = json.loads((directory / "state.json").read_text())
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    for name, head in (heads or {}).items():
        path = directory / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: this run trains a {name}, but its checkpoint has none "
                                    "(it was started without it: use a new --out)")
        head.load_state_dict(load_file(str(path)))
    trainer_path = directory / "trainer.pt"
    if trainer_path.is_file():
        trainer = torch.load(trainer_path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(trainer["optimizer"])
        torch.set_rng_state(trainer["rng"]["torch"])
        gen.set_state(trainer["rng"]["data"].to(gen.get_state().device))
        if "cuda" in trainer["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(trainer["rng"]["cuda"])
        if "python" in trainer["rng"]:  # absent from checkpoints written before it was saved
            random.setstate((3, tuple(trainer["rng"]["python"]), None))
    else:
        log.warning("%s has no trainer.pt: fresh optimizer, warm-up restarts at step %d", directory,
                    state["step"])
        state["rewarm_from"] = state["step"]
    return state


# ---- starting a run from an exported codec ---------------------------------------------------------------
def exported_config(directory: str | Path) -> RVQCodecConfig:
    """The `RVQCodecConfig` of an exported codec directory; a clear error for anything else."""
    directory = Path(directory)
    backend, config = read_export_config(directory, "--init-from", " (not a codec export)")
    if backend != "rvq":
        raise ValueError(f"--init-from {directory}: backend {backend!r}; only an 'rvq' codec can be trained")
    return RVQCodecConfig.from_dict(config)


def check_same_config(wanted: RVQCodecConfig, exported: RVQCodecConfig, directory: str | Path) -> None:
    """Refuse to start from an export whose architecture or quantizer settings differ from the run's."""
    a, b = wanted.to_dict(), exported.to_dict()
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    if diff:
        shown = ", ".join(f"{k}: run {x!r} vs export {y!r}" for k, (x, y) in sorted(diff.items()))
        raise ValueError(f"--init-from {directory}: codec config differs from the run's ({shown}); drop "
                         "--codec-config (the export's config is used) or make it match")


def init_from_export(model: RVQCodec, directory: str | Path) -> None:
    """Load every tensor of an exported codec (encoder, ResidualVQ codebooks with their EMA statistics and
    k-means 'initted' flags, decoder) into `model`, cast to the model's dtypes. Strict: a missing, extra or
    differently shaped tensor is an error. The config must have been checked with `check_same_config`."""
    directory = Path(directory)
    saved = load_file(str(directory / WEIGHTS_FILE))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    shapes = [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(f"--init-from {directory / WEIGHTS_FILE} does not fit the model: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}, other shapes {shapes[:5]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in saved.items()}, strict=True)
    log.info("initialised from %s (%d tensors; fresh optimizer, step 0)", directory, len(saved))


def save_if_best(out: Path, codec: RVQCodec, metrics: dict, key: str, extra: dict,
                 dtype: torch.dtype = torch.float16) -> bool:
    """Export `codec` to OUT/best (with training.json) when metrics[key] beats the value stored there (higher
    is better; the stored value survives resumes). -> whether it was written."""
    best = out / "best"
    if key not in metrics:
        return False
    if (best / "training.json").is_file():
        previous = json.loads((best / "training.json").read_text()).get(key)
        if previous is not None and metrics[key] <= previous:
            return False
    tmp = out / "best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    codec.save_pretrained(tmp, dtype=dtype)
    (tmp / "training.json").write_text(json.dumps({**extra, **metrics, "best_by": key}, indent=2) + "\n")
    swap_in(tmp, best)
    log.info("new best %s %.4f: exported to %s", key, metrics[key], best)
    return True
