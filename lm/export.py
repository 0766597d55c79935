"""The inference export of a training run: a self-contained directory that loads without DeepSpeed.

    export/
        model.safetensors     all TTSModel weights (fp32)              } lm.checkpoint.save_model
        config.json           ModelConfig + metadata (codec, tokenizer) } / load_model
        tokenizer.model       the sentencepiece text tokenizer
        codec/                a copy of the codec checkpoint, when the codec is a local directory
                              (otherwise metadata.codec is a named spec such as `encodec_24khz@6`)
        train_config.yaml     the resolved training config, for provenance

`lm.synthesizer.Synthesizer.from_pretrained(export)` and `scripts/generate.py --checkpoint export` read it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from lm.checkpoint import save_model
from lm.config import ModelConfig
from lm.train_config import TrainConfig, dump_yaml

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.model"  # == lm.synthesizer.DEFAULT_TOKENIZER_FILE
CODEC_DIR = "codec"
TRAIN_CONFIG_FILE = "train_config.yaml"


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
