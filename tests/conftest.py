"""Suite-wide settings: one compute thread per process, and no DeepSpeed state leaking between modules.

The tests run tiny models, which gain nothing from intra-op threads; on a busy 2-core machine OpenMP
threads spin-wait for a core and slow a step down 10x or more. The environment variable reaches every
subprocess the tests start (DeepSpeed ranks, the CLIs); set OMP_NUM_THREADS yourself to override it.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402 - after OMP_NUM_THREADS, which torch reads when it starts
from suite_helpers import deepspeed_group_release  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True, scope="module")
def _deepspeed_drops_destroyed_groups():
    """DeepSpeed caches its process groups. A module that ran an engine in this process and destroyed the
    world with torch.distributed.destroy_process_group() leaves them cached, and the next module's engine
    fails with "Group ... is not registered". deepspeed.comm.destroy_process_group() releases them; this
    does the same release for modules that tore down through torch, through DeepSpeed's private function
    (deepspeed_group_release fails with its name if DeepSpeed renames it)."""
    yield
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None and not torch.distributed.is_initialized():
        deepspeed_group_release(groups)(group=None)  # None: the world is gone
