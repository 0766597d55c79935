"""Training checkpoints: DeepSpeed's model / optimizer / scheduler files plus our own per-rank state, and
the rules for finding, validating, loading and pruning them.

    OUT/checkpoints/latest                          tag of the newest *complete* checkpoint (written last)
    OUT/checkpoints/step_00001000/
        mp_rank_00_model_states.pt, zero_pp_rank_*  DeepSpeed (model, ZeRO optimizer partitions, scheduler)
        train_state_rank00000.pt                    ours, one per rank: step, loader position, RNG states
        train_config.yaml                           the resolved training config of the run
    OUT/checkpoints/universal/step_00001000/        a world-size-free copy, made when a run resumes on
                                                    another number of ranks (lm/training/elastic_resume.py)

Everything is read with the weights-only unpickler: our files with plain `weights_only=True`, DeepSpeed's
through `deepspeed_setup.weights_only_checkpoint_loading`. A pickle payload is refused, never executed.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lm.training.config import TrainConfig, config_from_dict, dump_yaml, load_yaml
from lm.training.deepspeed_setup import UnsafeCheckpointError, weights_only_checkpoint_loading

log = logging.getLogger(__name__)

LATEST_FILE = "latest"
UNIVERSAL_DIR = "universal"
CONFIG_FILE = "train_config.yaml"
STATE_VERSION = 1
_TAG_RE = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or from another run layout; the message names the path."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def state_file(rank: int) -> str:
    return f"train_state_rank{rank:05d}.pt"


# ---------------------------------------------------------------------------------------------- RNG states


def rng_state(generator: torch.Generator) -> dict:
    """Python, numpy, torch (CPU + CUDA) global RNG states and the batch-layout generator, as plain types
    and tensors (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------- finding


def latest_tag(ckpt_root: Path) -> str | None:
    """The tag named by `latest`, validated: a `step_NNNNNNNN` directory directly under `ckpt_root`."""
    pointer = ckpt_root / LATEST_FILE
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not _TAG_RE.match(tag):
        raise CheckpointError(f"{pointer}: {tag!r} is not a checkpoint tag of this training code")
    if not (ckpt_root / tag).is_dir():
        raise CheckpointError(f"{pointer} names {tag}, but {ckpt_root / tag} does not exist")
    return tag


def read_checkpoint_config(ckpt_root: Path, tag: str) -> TrainConfig:
    path = ckpt_root / tag / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {ckpt_root / tag} is not a complete checkpoint")
    return config_from_dict(load_yaml(path))


def latest_config(out_dir: str | Path) -> TrainConfig | None:
    """The resolved config saved with the newest checkpoint of a run directory, or None (no checkpoint)."""
    root = Path(out_dir) / "checkpoints"
    tag = latest_tag(root)
    return None if tag is None else read_checkpoint_config(root, tag)


def list_tags(ckpt_root: Path) -> list[str]:
    if not ckpt_root.is_dir():
        return []
    return sorted(p.name for p in ckpt_root.iterdir() if p.is_dir() and _TAG_RE.match(p.name))


# -------------------------------------------------------------------------------------------------- saving


@dataclass
class ExtraState:
    """What DeepSpeed does not save for us: per rank."""

    step: int
    loader: dict
    rng: dict
    tokens_seen: int = 0

    def to_dict(self, rank: int, world_size: int) -> dict:
        return {"version": STATE_VERSION, "rank": rank, "world_size": world_size, "step": self.step,
                "loader": self.loader, "rng": self.rng, "tokens_seen": self.tokens_seen}


def save_checkpoint(engine, ckpt_root: Path, cfg: TrainConfig, extra: ExtraState, keep: int) -> Path:
    """Collective: every rank writes its own state, DeepSpeed writes the model / optimizer / scheduler, then
    rank 0 writes the config and, after a barrier, points `latest` at the new tag and prunes old ones."""
    rank, world = dist.get_rank(), dist.get_world_size()
    tag = tag_for(extra.step)
    tag_dir = ckpt_root / tag
    tag_dir.mkdir(parents=True, exist_ok=True)
    tmp = tag_dir / (state_file(rank) + ".tmp")
    torch.save(extra.to_dict(rank, world), tmp)
    os.replace(tmp, tag_dir / state_file(rank))
    engine.save_checkpoint(str(ckpt_root), tag=tag, client_state={"step": extra.step}, save_latest=False)
    if rank == 0:
        dump_yaml(cfg, tag_dir / CONFIG_FILE, header=f"# resolved training config at step {extra.step}")
    dist.barrier()  # every rank's files are on disk before `latest` moves
    if rank == 0:
        pointer_tmp = ckpt_root / (LATEST_FILE + ".tmp")
        pointer_tmp.write_text(tag + "\n")
        os.replace(pointer_tmp, ckpt_root / LATEST_FILE)
        for old in list_tags(ckpt_root)[:-keep]:
            if old != tag:
                shutil.rmtree(ckpt_root / old, ignore_errors=True)
                shutil.rmtree(ckpt_root / UNIVERSAL_DIR / old, ignore_errors=True)
    dist.barrier()
    log.info("saved checkpoint %s", tag_dir)
    return tag_dir


# ------------------------------------------------------------------------------------------------- loading


def load_extra_state(path: Path, rank: int, world_size: int) -> dict:
    """Our per-rank state, weights-only; refuses pickles and another world size."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (was the checkpoint written with another number of ranks?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if "Weights only load failed" in str(err):
            raise UnsafeCheckpointError(
                f"{path}: refusing to load pickled objects (arbitrary code execution); this file was not "
                f"written by this training code"
            ) from err
        raise CheckpointError(f"{path}: unreadable ({err})") from err
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: not a train state of version {STATE_VERSION}")
    if state["world_size"] != world_size or state["rank"] != rank:
        raise CheckpointError(
            f"{path}: written by rank {state['rank']} of {state['world_size']}, this is rank {rank} of "
            f"{world_size}; resume with the same number of processes for an exact continuation"
        )
    return state


def load_checkpoint(engine, ckpt_root: Path, tag: str) -> dict:
    """Restore the engine (model, optimizer, scheduler) from `ckpt_root/tag` and return this rank's extra
    state. Every file goes through the weights-only unpickler."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if not _TAG_RE.match(tag):
        raise CheckpointError(f"{ckpt_root}: {tag!r} is not a checkpoint tag of this training code")
    extra = load_extra_state(ckpt_root / tag / state_file(rank), rank, world)
    with weights_only_checkpoint_loading(engine):
        path, _client = engine.load_checkpoint(str(ckpt_root), tag=tag, load_optimizer_states=True,
                                               load_lr_scheduler_states=True)
    if path is None:
        raise CheckpointError(f"{ckpt_root / tag}: DeepSpeed found no model states to load")
    if engine.global_steps != extra["step"]:
        raise CheckpointError(f"{ckpt_root / tag}: DeepSpeed is at step {engine.global_steps}, our state at "
                              f"{extra['step']}: the checkpoint is inconsistent")
    return extra
