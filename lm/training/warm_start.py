"""Start a training run from the weights of an export or a published model (e.g. `models/default`).

Run directories do not outlive a machine, but published weights are committed. A run that has no checkpoint
yet and a `init_from` directory loads those weights (fp16 ones are cast back to fp32), reuses that model's
text tokenizer, and continues the step count, so the learning-rate schedule, from the `train_step` the
export recorded. What cannot come back from an export starts fresh and is logged: the optimizer's moments and
the data order. A run that already has checkpoints ignores `init_from` and resumes exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from codec.identity import codec_identity
from data_pipeline.tokens.token_codec import CodecMismatchError
from lm.checkpoint import MODEL_FILE, read_config
from lm.model.model import TTSModel

log = logging.getLogger(__name__)


def init_tokenizer_path(directory: str | Path) -> Path:
    """The text tokenizer that the model in `directory` was trained with."""
    directory = Path(directory)
    _, meta = read_config(directory)
    path = directory / str(meta.get("text_tokenizer", "tokenizer.model"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the init_from model has no text tokenizer (its text ids need it)")
    return path


def check_init_codec(directory: str | Path, data_codec: str, data_spec: str) -> None:
    """The init_from model must have been trained on tokens of the codec the data come from: its code
    embeddings mean those codes. `data_codec` is the shards' identity (a named codec's is its spec)."""
    directory = Path(directory)
    _, meta = read_config(directory)
    if not meta.get("codec"):
        log.warning("init_from %s records no codec; cannot check it against the data's %s", directory,
                    data_spec)
        return
    path = directory / str(meta["codec"])
    if data_codec.startswith("sha256:"):
        theirs = codec_identity(path) if path.is_dir() else "unknown (its codec directory is missing)"
        same = theirs == data_codec
    else:  # a named codec, or old shards whose codec directory is gone: compare where the codecs live
        theirs = str(meta.get("codec_source") or path)
        same = path.resolve() == Path(data_spec).resolve() or theirs == data_spec
    if not same:
        raise CodecMismatchError(f"init_from {directory} was trained on tokens of codec {meta['codec']} "
                                 f"({theirs}); the training data are tokens of {data_spec} ({data_codec}). "
                                 f"Start from scratch, or tokenize the corpus with the model's codec")


def load_init_weights(model: TTSModel, directory: str | Path) -> int:
    """Copy the weights of `directory` into `model` (whose config must match); -> the step they reached."""
    directory = Path(directory)
    config, meta = read_config(directory)
    if config != model.config:
        mine, theirs = dataclasses.asdict(model.config), dataclasses.asdict(config)
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        raise ValueError(f"{directory / 'config.json'}: init_from model differs from this run's model "
                         f"(field: (theirs, this run's)) {diff}")
    weights = directory / MODEL_FILE
    try:
        state = load_file(str(weights))
    except Exception as err:  # missing, truncated or corrupt file
        raise ValueError(f"{weights}: cannot read init_from weights ({err})") from err
    result = model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{weights}: does not match the model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    step = int(meta.get("train_step", 0))
    log.info("init_from %s: weights trained for %d steps; optimizer moments and data order start fresh",
             directory, step)
    return step


def fast_forward_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, step: int) -> None:
    """Put a step-indexed scheduler at `step`, learning rates included, before the first optimizer step."""
    scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
