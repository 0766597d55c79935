"""Helpers shared by the whole suite. Tests import them as `from suite_helpers import ...`: pytest puts
tests/ on sys.path when it loads tests/conftest.py (rootdir-relative imports, no __init__.py)."""

from __future__ import annotations

import csv
import re
import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

# torch's TCPStore says "EADDRINUSE ... address already in use"; Python's OSError "[Errno 98] Address
# already in use"
ADDRESS_IN_USE = re.compile(r"EADDRINUSE|address already in use", re.IGNORECASE)


# ---- ports for distributed runs ----------------------------------------------------------------------------
def single_rank_env() -> dict[str, str]:
    """The environment of a one-process world. MASTER_PORT=0: rank 0 hosts the rendezvous store on a port
    the OS picks when it binds, and no other rank needs to know it, so no other process can take the port
    between choosing it and binding it."""
    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}


def candidate_port() -> int:
    """A port that was free a moment ago. Another process may take it before the caller binds it: use it
    through `run_on_free_port`, which tries another port when that happened."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(text: str) -> bool:
    """Whether an error message or a process's output says that an address was already in use."""
    return ADDRESS_IN_USE.search(text) is not None


def run_on_free_port(launch: Callable[[int], T], clashed: Callable[[T], bool] = lambda _: False,
                     attempts: int = 5) -> T:
    """`launch(port)` on a port that was free a moment ago (several ranks must know it in advance: the
    `deepspeed` launcher's --master_port). When another process took the port in between, which `launch`
    reports by raising an "address already in use" error or `clashed(result)` by returning True, it runs
    again on a new port, up to `attempts` times in all. Any other failure is passed on at once."""
    for _ in range(attempts - 1):
        try:
            result = launch(candidate_port())
        except Exception as err:
            if port_taken(str(err)):
                continue
            raise
        if not clashed(result):
            return result
    return launch(candidate_port())  # the last attempt: whatever happens is the answer


# ---- DeepSpeed's cached process groups ---------------------------------------------------------------------
DEEPSPEED_RELEASE = "_release_process_group_references"  # private in deepspeed.utils.groups


def deepspeed_group_release(groups: ModuleType) -> Callable[..., None]:
    """DeepSpeed's private function that drops its cached process groups (deepspeed.utils.groups), or a
    clear error naming it when DeepSpeed renamed or removed it (the suite's isolation depends on it)."""
    release = getattr(groups, DEEPSPEED_RELEASE, None)
    if not callable(release):
        raise RuntimeError(
            f"{groups.__name__}.{DEEPSPEED_RELEASE} is missing from this DeepSpeed: tests/conftest.py uses "
            f"that private function to drop DeepSpeed's cached process groups between test modules; find "
            f"its new name in the installed DeepSpeed and update tests/suite_helpers.py")
    return release


# ---- a tiny exported model ---------------------------------------------------------------------------------
SPEECH = Path(__file__).resolve().parent / "data" / "speech"
TINY_CODEC_SPEC = "encodec_24khz:random"


def build_tiny_export(directory: Path, codec_spec: str = TINY_CODEC_SPEC, **model_overrides) -> Path:
    """Tiny preset, random init, sentencepiece trained on the repo transcripts, written by the training
    run's own exporter (lm.training.export -> lm.checkpoint.save_model), so the layout cannot drift from
    training's. (Imports inside: this module is loaded by conftest.py before torch.)"""
    import torch

    from data_pipeline.text.tokenizer import TextTokenizer
    from lm.model.config import get_preset
    from lm.model.model import TTSModel
    from lm.training.export import export_inference_dir

    texts = []
    for tsv in sorted(SPEECH.glob("*/transcripts.tsv")):
        with tsv.open() as f:
            texts += [row["transcript"] for row in csv.DictReader(f, delimiter="\t")]
    tokenizer_path = directory.with_name(directory.name + "-text.model")
    tokenizer = TextTokenizer.train(texts, tokenizer_path, vocab_size=400)
    config = get_preset("tiny", text_vocab_size=tokenizer.vocab_size, **model_overrides)
    torch.manual_seed(0)
    return export_inference_dir(directory, config, TTSModel(config).state_dict(), tokenizer_path, codec_spec)
