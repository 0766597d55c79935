#!/usr/bin/env python
"""Train the codec-token TTS model (Llama AR + NAR head) with DeepSpeed ZeRO; export for generate.py.

Launch (any of):
  python scripts/train.py --data runs/demo/tokens --out runs/exp --preset tiny \\
      --deepspeed ds_configs/zero2.json --max-steps 200                           # one process (CPU or GPU)
  deepspeed --num_gpus 8 scripts/train.py --data /data/tokens --out runs/big --preset large \\
      --deepspeed ds_configs/zero3.json gradient_accumulation_steps=4 optim.lr=2e-4
  deepspeed --hostfile hosts --num_nodes 4 --num_gpus 8 scripts/train.py ...    # several nodes (ssh)
  torchrun --nnodes 4 --node_rank N --nproc_per_node 8 --master_addr HOST0 \\
      --master_port 29500 scripts/train.py ...                 # on each node N (README: Train on a cluster)
  torchrun --nproc_per_node 2 scripts/train.py ...                                # CPU: gloo
  deepspeed --num_gpus 2 scripts/train.py ...    # on a CPU-only machine: 2 CPU ranks (gloo)

Settings: --config YAML (a saved OUT/train_config.yaml works) and `a.b=value` overrides, checked against
lm/training/config.py (unknown keys and wrong types are errors). Later wins: preset < YAML < flags <
overrides. --resume continues OUT from its newest checkpoint (model, optimizer, scheduler, RNG, data
position): the continuation is exact with the same number of ranks. On another number of ranks the checkpoint
is converted to a DeepSpeed universal checkpoint (OUT/checkpoints/universal/) and the data position handed
over (lm/training/elastic_resume.py). SIGTERM checkpoints and exits with status 143.
At the end OUT/export holds model.safetensors, config.json, tokenizer.model (+ codec/ for a local codec).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lm.training.config import ConfigError, load_yaml, resolve_config
from lm.training.deepspeed_setup import DeepSpeedConfigError, UnsafeCheckpointError
from lm.training.train_state import CheckpointError, latest_config

log = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="token shards: directory, glob or URL (sets data.train)")
    p.add_argument("--out", required=True, help="run directory: checkpoints, logs, tokenizer, export")
    p.add_argument("--preset", default=None, help="model preset: tiny, small (~100M), medium, large (~1B)")
    p.add_argument("--deepspeed", "--deepspeed_config", dest="deepspeed", default="ds_configs/zero2.json",
                   help="DeepSpeed system config (ZeRO stage, offload, precision) (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (sets max_steps)")
    p.add_argument("--resume", action="store_true", help="continue OUT from its newest checkpoint, if any")
    p.add_argument("--config", default=None, help="YAML training config")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("overrides", nargs="*", metavar="a.b=value", help="config overrides, e.g. optim.lr=1e-3")
    return p.parse_args(argv)


def setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    flags = {k: v for k, v in (("preset", args.preset), ("max_steps", args.max_steps)) if v is not None}
    if args.data is not None:
        flags["data"] = {"train": args.data}
    try:
        base = latest_config(args.out) if args.resume else None
        yaml_data = load_yaml(args.config) if args.config else None
        cfg = resolve_config(base=base, yaml_data=yaml_data, flags=flags, overrides=args.overrides)
    except (ConfigError, CheckpointError) as err:
        log.error("%s", err)
        return 2

    import torch.distributed as dist

    from lm.training.trainer import SIGTERM_EXIT_CODE, train

    try:
        result = train(cfg, args.out, args.deepspeed, resume=args.resume)
    except (ConfigError, DeepSpeedConfigError, CheckpointError, UnsafeCheckpointError, FileExistsError,
            FileNotFoundError, ValueError) as err:
        hint = "" if args.verbose else " (run with -v for the traceback)"
        log.error("%s%s", err, hint, exc_info=args.verbose)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result.stopped_by_signal:
        return SIGTERM_EXIT_CODE
    where = f"; export in {result.export_dir}" if result.export_dir else ""
    log.info("done at step %d%s", result.step, where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
