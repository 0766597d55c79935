#!/usr/bin/env python
"""Export one checkpoint of a training run (running, killed or finished) to an inference directory, e.g. to
evaluate a run at several steps without stopping it:

    python scripts/export_checkpoint.py --run runs/lm_default/train --out runs/lm_default/export_1000 \\
        --tag step_00001000
    python scripts/evaluate.py --checkpoint runs/lm_default/export_1000 \
        --list evaluation/lists/unseen_sentences.lst ...

Without --tag the latest complete checkpoint is exported. The fp32 weights are rebuilt from the optimizer's
partitions (any ZeRO stage, fp32 or bf16 runs) with the weights-only unpickler; no engine is started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lm.training.deepspeed_setup import UnsafeCheckpointError
from lm.training.export import export_checkpoint
from lm.training.train_state import CheckpointError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the training run directory (train.py --out)")
    p.add_argument("--out", type=Path, required=True, help="inference directory to write (replaced)")
    p.add_argument("--tag", default=None, help="checkpoint to export, e.g. step_00001000 (default: latest)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        out = export_checkpoint(args.run, args.out, args.tag)
    except (FileNotFoundError, ValueError, CheckpointError, UnsafeCheckpointError) as err:
        print(f"export_checkpoint: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
