"""Export / load a model directory without DeepSpeed and without pickle:

    <dir>/model.safetensors   all weights of TTSModel (AR `ar.model.*` keeps HF LlamaModel names)
    <dir>/config.json         {"format", "version", "model": ModelConfig, "metadata": {...}}

`metadata` carries what inference needs besides weights (codec spec, text tokenizer path, frame rate ...); the
training script decides its content. `save_ar_as_hf` additionally writes the AR decoder as a stock
`transformers` LlamaModel directory for the Hugging Face ecosystem.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lm.model.config import ModelConfig
from lm.model.model import TTSModel

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "codectts-lm"
VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def save_model(
    model: TTSModel | None,
    config: ModelConfig,
    directory: str | os.PathLike,
    metadata: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write weights + config atomically (temporary names, then rename). Returns the directory.

    state_dict overrides the model's own (e.g. the consolidated fp32 weights of a ZeRO-3 run); then model may
    be None.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    adapters = [k for k in state if "lora_" in k]
    if adapters:
        raise ValueError(
            f"the model still holds LoRA adapter weights ({adapters[0]} ...): merge them into the base "
            f"weights first, or save the adapter with peft"
        )
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    tmp_model, tmp_config = directory / (MODEL_FILE + ".tmp"), directory / (CONFIG_FILE + ".tmp")
    save_file(tensors, str(tmp_model), metadata={"format": FORMAT})
    payload = {"format": FORMAT, "version": VERSION, "model": config.to_dict(), "metadata": metadata or {}}
    tmp_config.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp_model, directory / MODEL_FILE)
    os.replace(tmp_config, directory / CONFIG_FILE)
    log.info("saved model (%d tensors) to %s", len(tensors), directory)
    return directory


def read_config(directory: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """-> (ModelConfig, metadata) from <dir>/config.json, with errors that name the file."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no model config here (expected an export made by lm.checkpoint.save_model)"
        )
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {payload.get('format')!r}, expected {FORMAT!r}")
    if payload.get("version", 0) > VERSION:
        raise ValueError(f"{path}: version {payload['version']} is newer than this code ({VERSION})")
    try:
        config = ModelConfig.from_dict(payload["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad model config ({err})") from err
    return config, payload.get("metadata", {})


def load_model(
    directory: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> TTSModel:
    """Build TTSModel from <dir>/config.json and load <dir>/model.safetensors (never a pickle). Eval mode."""
    directory = Path(directory)
    config, _ = read_config(directory)
    weights = directory / MODEL_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = (
            f"; refusing pickle files {pickles} (arbitrary code execution): export safetensors"
            if pickles
            else ""
        )
        raise FileNotFoundError(f"{weights}: missing{hint}")
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as err:  # safetensors raises its own error types for truncated / corrupt files
        raise ValueError(f"{weights}: cannot read safetensors ({err})") from err
    model = TTSModel(config)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights}: does not match the config in {directory / CONFIG_FILE}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()


def save_ar_as_hf(model: TTSModel, directory: str | os.PathLike) -> Path:
    """The AR decoder as a stock transformers `LlamaModel` directory (config.json + model.safetensors) plus
    `code_head.safetensors` (`weight`, and with ar_codebooks > 1 the delayed codebooks'
    `delayed_embeds.R.weight` / `delayed_heads.R.weight`, and with alignment = "phoneme" the phone inputs
    `phone_embed.weight` / `phone_pos_embed.weight` and the advance head `advance_head.weight` / `.bias`);
    loads with `LlamaModel.from_pretrained(directory)`."""
    directory = Path(directory)
    model.ar.model.save_pretrained(directory, safe_serialization=True)
    heads = {"weight": model.ar.code_head.weight}
    for name in ("delayed_embeds", "delayed_heads"):
        for r, module in enumerate(getattr(model.ar, name)):
            heads[f"{name}.{r}.weight"] = module.weight
    if model.ar.advance_head is not None:
        heads.update({"phone_embed.weight": model.ar.phone_embed.weight,
                      "phone_pos_embed.weight": model.ar.phone_pos_embed.weight,
                      "advance_head.weight": model.ar.advance_head.weight,
                      "advance_head.bias": model.ar.advance_head.bias})
    save_file(
        {key: weight.detach().cpu().contiguous() for key, weight in heads.items()},
        str(directory / "code_head.safetensors"),
    )
    return directory
