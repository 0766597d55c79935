"""scripts/train.py with probes for the cluster tests (a helper they launch, not a test).

Run in place of scripts/train.py, under any launcher, with PROBE_DIR=DIR in the environment:
- after every checkpoint save and after the restore of a resumed run, every rank joins in gathering the
  full fp32 weights and both Adam moments (collective under ZeRO), and rank 0 writes them to
  DIR/{save|restore}_step{N}_world{W}.pt, so a test can check that a resume at another world size brought
  back exactly what was saved;
- every rank appends the keys of each micro-batch it trains on to DIR/keys_rank{R}.jsonl, so a test can
  check which samples each rank saw.

It wraps lm.training.trainer.Trainer's `__init__`, `save` and `_restore`; if one of them is renamed, this
helper fails at once and says so.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state  # noqa: E402

from lm.training.trainer import Trainer  # noqa: E402 - after the repository root is on the path

OUT = Path(os.environ["PROBE_DIR"])
for hook in ("__init__", "save", "_restore"):
    if not callable(getattr(Trainer, hook, None)):
        raise RuntimeError(f"lm.training.trainer.Trainer.{hook} is gone: update "
                           f"tests/training/probe_state.py")


def dump(trainer: Trainer, event: str) -> None:
    """Collective: the full fp32 weights and Adam moments, concatenated in parameter order."""
    optimizer = trainer.engine.optimizer
    if hasattr(optimizer, "_lazy_init_hp_params_optimizer_state"):
        # ZeRO-1/2 link each parameter to its Adam moments lazily, after the first step of param group 0,
        # before group 1 has any state (DeepSpeed 0.19): link again now that every group has its state
        optimizer._hp_optimizer_states_linked = False
        optimizer._lazy_init_hp_params_optimizer_state()
    parts: dict[str, list[torch.Tensor]] = {"weights": [], "exp_avg": [], "exp_avg_sq": []}
    seen: set[int] = set()
    for _, param in trainer.engine.module.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        full = safe_get_full_fp32_param(param)
        parts["weights"].append((param.detach() if full is None else full).float().cpu().flatten())
        for key in ("exp_avg", "exp_avg_sq"):
            state = safe_get_full_optimizer_state(param, key)
            parts[key].append(state.float().cpu().flatten() if state is not None else torch.zeros(0))
    if dist.get_rank() == 0:
        record = {k: torch.cat(v) for k, v in parts.items()}
        record["lr"] = torch.tensor(trainer.engine.get_lr()[0])
        # the step count of Adam's bias correction, as the wrapped torch optimizer holds it
        inner = optimizer.optimizer
        record["adam_steps"] = torch.tensor(sorted({float(s["step"]) for s in inner.state.values()
                                                    if "step" in s}))
        OUT.mkdir(parents=True, exist_ok=True)
        torch.save(record, OUT / f"{event}_step{trainer.step}_world{trainer.world_size}.pt")


def recorded(trainer: Trainer, batches: Iterator) -> Iterator:
    path = OUT / f"keys_rank{trainer.rank}.jsonl"
    for batch in batches:
        with open(path, "a") as f:
            f.write(json.dumps({"step": trainer.step + 1, "keys": list(batch.keys)}) + "\n")
        yield batch


_init, _save, _restore = Trainer.__init__, Trainer.save, Trainer._restore


def __init__(self: Trainer, *args, **kwargs) -> None:
    _init(self, *args, **kwargs)
    OUT.mkdir(parents=True, exist_ok=True)
    self.train_iter = recorded(self, self.train_iter)


def save(self: Trainer) -> Path:
    path = _save(self)
    dump(self, "save")
    return path


def _restore_probed(self: Trainer, tag: str) -> None:
    _restore(self, tag)
    dump(self, "restore")


Trainer.__init__, Trainer.save, Trainer._restore = __init__, save, _restore_probed
sys.argv = [str(ROOT / "scripts" / "train.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
