"""The inference export of a training run: a self-contained directory that loads without DeepSpeed.

    export/
        model.safetensors     all TTSModel weights (fp32)              } lm.checkpoint.save_model
        config.json           ModelConfig + metadata (codec, tokenizer) } / load_model
        tokenizer.model       the sentencepiece text tokenizer
        codec/                a copy of the codec checkpoint, when the codec is a local directory
                              (otherwise metadata.codec is a named spec such as `encodec_24khz@6`)
        train_config.yaml     the resolved training config, for provenance

`lm.inference.synthesizer.Synthesizer.from_pretrained(export)` and `scripts/generate.py --checkpoint export`
read it.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import torch

from lm.checkpoint import save_model
from lm.model.config import ModelConfig
from lm.model.model import TTSModel
from lm.training.config import TrainConfig, dump_yaml
from lm.training.deepspeed_setup import UnsafeCheckpointError, torch_load_weights_only
from lm.training.train_state import latest_tag, list_tags, read_checkpoint_config

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.model"  # == lm.inference.export_dir.DEFAULT_TOKENIZER_FILE
CODEC_DIR = "codec"
TRAIN_CONFIG_FILE = "train_config.yaml"
MODEL_STATES_FILE = "mp_rank_00_model_states.pt"  # in every DeepSpeed checkpoint directory


def export_inference_dir(
    directory: str | Path,
    model_config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    tokenizer_path: str | Path,
    codec_spec: str,
    train_config: TrainConfig | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write the export into `directory` (replaced as a whole: built under a temporary name, then renamed).

    codec_spec: a `codec.base.load_codec` spec; a local codec directory is copied in as `codec/`.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    codec_path = Path(codec_spec).expanduser()
    if codec_path.is_dir():
        shutil.copytree(codec_path, tmp / CODEC_DIR)
        codec_ref = CODEC_DIR
    else:
        if os.sep in codec_spec:
            log.warning("codec %r is not a directory here; the export names it as it is", codec_spec)
        codec_ref = codec_spec
    shutil.copyfile(tokenizer_path, tmp / TOKENIZER_FILE)
    meta = {**(metadata or {}), "codec": codec_ref, "codec_source": codec_spec,
            "text_tokenizer": TOKENIZER_FILE}
    if train_config is not None:
        # speaker-prompt mode: the model never saw a prompt longer than training's; a longer one is out of
        # distribution (and slower), so the synthesizer keeps only that many seconds by default
        decode = meta.setdefault("decode", {})
        decode.setdefault("max_prompt_seconds", train_config.data.batching.prompt_max_seconds)
    # save_model reads only the state dict passed (the consolidated fp32 weights), not a module
    save_model(None, model_config, tmp, metadata=meta, state_dict=state_dict)
    if train_config is not None:
        dump_yaml(train_config, tmp / TRAIN_CONFIG_FILE, header="# the training config this export came from")
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)
    log.info("exported %s (%d tensors, codec %s)", directory, len(state_dict), codec_ref)
    return directory


def checkpoint_state_dict(checkpoint: Path, model_config: ModelConfig) -> dict[str, torch.Tensor]:
    """The fp32 weights of one DeepSpeed checkpoint directory, read without an engine, under any ZeRO stage
    and precision: DeepSpeed's `zero_to_fp32` rebuilds them from the optimizer's fp32 partitions (the
    masters, as the run's own export holds them), with every file read by the weights-only unpickler."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if not (checkpoint / MODEL_STATES_FILE).is_file():
        raise FileNotFoundError(f"{checkpoint / MODEL_STATES_FILE}: missing; {checkpoint} is not a DeepSpeed "
                                f"checkpoint directory")
    try:
        with torch_load_weights_only():
            state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(f"{checkpoint}: refusing to unpickle a file of it ({err})") from err
    with torch.device("meta"):
        model = TTSModel(model_config)
    try:  # strict: names and shapes must match the run's config (meta + assign: no weights are copied)
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"{checkpoint}: does not match the run's model config: {err}") from err
    return {name: t.float() if t.is_floating_point() else t for name, t in state.items()}


def export_checkpoint(run_dir: str | Path, out: str | Path, tag: str | None = None) -> Path:
    """Export checkpoint `tag` (default: the latest complete one) of a training run directory to an
    inference directory `out`, as the run's own export at that step would be; the run may still be going."""
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    tag = tag or latest_tag(root)
    if tag is None or tag not in list_tags(root):
        raise FileNotFoundError(f"{root}: no checkpoint {tag or ''}; found {list_tags(root) or 'none'}")
    cfg = read_checkpoint_config(root, tag)
    tokenizer = run_dir / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise FileNotFoundError(f"{tokenizer}: missing; the run's text tokenizer is needed for an export")
    state = checkpoint_state_dict(root / tag, cfg.model)
    step = int(tag.split("_")[1])
    metadata = {"train_step": step, "preset": cfg.preset, "run_dir": str(run_dir.resolve()),
                "checkpoint": tag}
    return export_inference_dir(out, cfg.model, state, tokenizer, cfg.codec, train_config=cfg,
                                metadata=metadata)
