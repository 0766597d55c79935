"""Resume a training run on another number of ranks (preemption, then a restart on fewer or more GPUs).

    OUT/checkpoints/step_N/            written by A ranks (ZeRO partitions for A ranks, A train states)
        --ds_to_universal (rank 0, once)-->  OUT/checkpoints/universal/step_N/   (per-parameter fp32
                                             weights and Adam moments, world-size free)
        --engine built with checkpoint.load_universal--> B ranks load their own new partitions

Model, optimizer (fp32 master weights, both Adam moments, step) and scheduler come back exactly; only
how they are partitioned changes. Under ZeRO stage 0 nothing is partitioned and the ordinary checkpoint
loads at any world size. Our per-rank state: the step and token count are the same on every rank; the
data position of *all* A ranks is handed over to the B new ones (data_pipeline/loading/handover.py: the
unfinished epochs of the old streams are finished, so no sample is repeated or skipped); new rank r takes
old rank r's RNG streams, and a rank that did not exist before gets fresh ones seeded from (seed, rank,
step). The conversion is kept beside the checkpoint and pruned with it; it needs a file system that every
node sees (as DeepSpeed's own checkpoints do).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import random
import re
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from data_pipeline.loading.loader import TokenLoader
from lm.training.deepspeed_setup import torch_load_weights_only, weights_only_checkpoint_loading
from lm.training.train_state import (
    UNIVERSAL_DIR,
    CheckpointError,
    load_extra_state,
    read_checkpoint_config,
    set_rng_state,
    state_file,
)

log = logging.getLogger(__name__)

_STATE_RE = re.compile(r"^train_state_rank(\d{5})\.pt$")


def checkpoint_world_size(tag_dir: Path) -> int:
    """How many ranks wrote the checkpoint: its train_state_rankNNNNN.pt files, which must be 0..A-1."""
    ranks = sorted(int(m.group(1)) for p in tag_dir.iterdir() if (m := _STATE_RE.match(p.name)))
    if not ranks:
        raise CheckpointError(f"{tag_dir}: no train_state_rank*.pt files; not a checkpoint of this trainer")
    if ranks != list(range(len(ranks))):
        raise CheckpointError(f"{tag_dir}: train states of ranks {ranks}; some rank's file is missing")
    return len(ranks)


def universal_load_config(ds_config: dict) -> dict:
    """The DeepSpeed config with `checkpoint.load_universal` on (read when the engine is built)."""
    ds = copy.deepcopy(ds_config)
    ds.setdefault("checkpoint", {})["load_universal"] = True
    return ds


def convert_to_universal(ckpt_root: Path, tag: str) -> Path:
    """DeepSpeed's ds_to_universal of `ckpt_root/tag` into `ckpt_root/universal/tag`, once (an existing
    conversion is complete: it is renamed into place last). Every file is read weights-only."""
    from deepspeed.checkpoint import ds_to_universal

    out = ckpt_root / UNIVERSAL_DIR / tag
    if out.is_dir():
        return out
    tmp = out.with_name(tag + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a conversion that was killed half-way
    args = Namespace(input_folder=str(ckpt_root / tag), output_folder=str(tmp), num_extract_workers=1,
                     num_merge_workers=1, keep_temp_folder=False, strict=True,
                     # our checkpoints carry no Megatron-style universal info (no tensor / pipeline parallel)
                     inject_missing_state=True)
    printed = io.StringIO()
    try:
        # one process (no pool), so the weights-only torch.load reaches every read; its prints and
        # progress bars go to the debug log
        with torch_load_weights_only(), contextlib.redirect_stdout(printed), \
                contextlib.redirect_stderr(printed):
            ds_to_universal.main(args)
    finally:
        log.debug("ds_to_universal: %s", printed.getvalue())
    (out.parent / "latest_universal").unlink(missing_ok=True)  # it names the .tmp folder; we pass tags
    os.replace(tmp, out)
    return out


def _collective_convert(ckpt_root: Path, tag: str) -> None:
    """Rank 0 converts while the others wait; a failure raises on every rank (none hangs)."""
    error = [None]
    if dist.get_rank() == 0:
        try:
            convert_to_universal(ckpt_root, tag)
        except Exception as err:  # noqa: BLE001 - reported to every rank below
            log.exception("converting %s to a universal checkpoint failed", ckpt_root / tag)
            error = [f"{type(err).__name__}: {err}"]
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise CheckpointError(f"{ckpt_root / tag}: cannot convert to a universal checkpoint for another "
                              f"world size ({error[0]})")


def _reseed(seed: int, generator: torch.Generator) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator.manual_seed(seed)


def _ranks(n: int) -> str:
    return f"{n} rank" if n == 1 else f"{n} ranks"


def restore_at_new_world_size(engine, loader: TokenLoader, generator: torch.Generator, ckpt_root: Path,
                              tag: str, zero_stage: int, seed: int,
                              grad_accumulation: int) -> tuple[int, int]:
    """Collective. Restore engine, loader and RNG from a checkpoint written by another number of ranks;
    returns (step, tokens_seen). The engine must have been built with `universal_load_config` (ZeRO >= 1)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    tag_dir = ckpt_root / tag
    old_world = checkpoint_world_size(tag_dir)
    extras = [load_extra_state(tag_dir / state_file(r), r, old_world) for r in range(old_world)]
    steps = {int(e["step"]) for e in extras}
    if len(steps) != 1:
        raise CheckpointError(f"{tag_dir}: the ranks' train states are at different steps {sorted(steps)}")
    step = steps.pop()
    if zero_stage == 0:
        load_dir, how = ckpt_root, "ZeRO-0 checkpoint (not partitioned)"
    else:
        _collective_convert(ckpt_root, tag)
        load_dir, how = ckpt_root / UNIVERSAL_DIR, f"ZeRO-{zero_stage} via universal checkpoint"
    with weights_only_checkpoint_loading(engine), torch_load_weights_only():
        path, _ = engine.load_checkpoint(str(load_dir), tag=tag, load_optimizer_states=True,
                                         load_lr_scheduler_states=True)
    if path is None:
        raise CheckpointError(f"{load_dir / tag}: DeepSpeed found no model states to load")
    if engine.global_steps != step:
        raise CheckpointError(f"{load_dir / tag}: DeepSpeed is at step {engine.global_steps}, the train "
                              f"states at {step}: the checkpoint is inconsistent")
    data_note = loader.load_resharded_state([e["loader"] for e in extras])
    if rank < old_world:
        set_rng_state(extras[rank]["rng"], generator)
    else:  # a rank that did not exist: its own streams, different from every other rank's
        _reseed(seed * 1000 + rank + 7919 * step, generator)
    old_accumulation = read_checkpoint_config(ckpt_root, tag).gradient_accumulation_steps
    log.info("resumed step %d from %s on %s (%s); micro-batches per optimizer step %d x %d -> %d x %d; %s",
             step, _ranks(old_world), _ranks(world), how, old_world, old_accumulation, world,
             grad_accumulation, data_note)
    if old_world * old_accumulation != world * grad_accumulation and rank == 0:
        log.warning("the global batch changed from %d to %d micro-batches per step; set "
                    "gradient_accumulation_steps to keep it", old_world * old_accumulation,
                    world * grad_accumulation)
    return step, int(extras[0]["tokens_seen"])
