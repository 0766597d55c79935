"""scripts/train.py with a SIGTERM at a known step (a helper the SIGTERM test launches, not a test).

Run in place of scripts/train.py, under any launcher, with SIGTERM_AT_STEP=N in the environment: right
after optimizer step N, rank 0 sends SIGTERM to its whole process group (the launcher and every rank, as a
cluster scheduler does) and waits until its own handler has seen it, so the ranks' stop vote at that same
step finds it: the run stops, checkpoints and exits at step N however fast or slow the machine is.

It wraps lm.training.trainer.Trainer._stop_agreed, the point in the training loop where the ranks agree on a
stop; if that private method is renamed, this helper fails at once and says so.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lm.training.trainer import Trainer  # noqa: E402 - after the repository root is on the path

STEP = int(os.environ["SIGTERM_AT_STEP"])
HOOK = "_stop_agreed"
if not callable(getattr(Trainer, HOOK, None)):
    raise RuntimeError(f"lm.training.trainer.Trainer.{HOOK} is gone: update "
                       f"tests/training/sigterm_at_step.py to the point where the training loop decides to "
                       f"stop")
_agree = getattr(Trainer, HOOK)


def _stop_agreed(self: Trainer) -> bool:
    if self.step == STEP and self.rank == 0:
        os.killpg(os.getpgid(0), signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not self._stop_requested:  # the handler runs in this (main) thread between bytecodes
            if time.monotonic() > deadline:
                raise RuntimeError(f"SIGTERM sent at step {STEP}, but the trainer's handler never saw it")
            time.sleep(0.01)
    return _agree(self)


setattr(Trainer, HOOK, _stop_agreed)
sys.argv = [str(ROOT / "scripts" / "train.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
