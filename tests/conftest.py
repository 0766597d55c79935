"""Suite-wide settings: one compute thread per process.

The tests run tiny models, which gain nothing from intra-op threads; on a busy 2-core machine OpenMP
threads spin-wait for a core and slow a step down 10x or more. The environment variable reaches every
subprocess the tests start (DeepSpeed ranks, the CLIs); set OMP_NUM_THREADS yourself to override it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402 - after OMP_NUM_THREADS, which torch reads when it starts

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
