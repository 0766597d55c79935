"""An export directory as the `Synthesizer` reads it: where the default model lives, the checks that name
what is missing, the metadata keys that name the text tokenizer and the codec, and a LoRA adapter on top.
The directory itself is written by lm/training/export.py (weights + config: lm/checkpoint.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm.checkpoint import CONFIG_FILE, MODEL_FILE, read_config
from lm.inference.synthesis_types import SynthesisError
from lm.model.model import TTSModel

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where `generate.py` looks when no --checkpoint is given: copy (or symlink) an export directory here.
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "default"
# Export-directory metadata keys (written by the training export), and the tokenizer file name when absent.
CODEC_KEY = "codec"
TOKENIZER_KEY = "text_tokenizer"
DEFAULT_TOKENIZER_FILE = "tokenizer.model"
# also accepted when reading, so exports written by other tools still load
CODEC_KEYS = (CODEC_KEY, "codec_spec", "codec_dir")
TOKENIZER_KEYS = (TOKENIZER_KEY, "tokenizer", "text_tokenizer_path", "tokenizer_model")


def _check_export_dir(directory: Path) -> None:
    is_default = directory.resolve() == DEFAULT_MODEL_DIR.resolve()
    how = ("train one (scripts/train.py writes RUN/export, `make demo` writes runs/demo/train/export) and "
           "pass it with --checkpoint DIR")
    if is_default and not directory.exists():
        raise SynthesisError(f"no default model at {directory}: {how}, or copy / symlink an export "
                             f"directory to {DEFAULT_MODEL_DIR}")
    if not directory.is_dir():
        raise SynthesisError(f"checkpoint directory {directory} does not exist: {how}")
    missing = [name for name in (CONFIG_FILE, MODEL_FILE) if not (directory / name).is_file()]
    if missing:
        raise SynthesisError(f"{directory} is not an export directory (missing {', '.join(missing)}); pass "
                             f"RUN/export, not the DeepSpeed checkpoint folder")


def export_assets(checkpoint_dir: str | Path) -> tuple[Path, str]:
    """(text tokenizer path, codec spec) of an export directory, resolved as `from_pretrained` does."""
    directory = Path(checkpoint_dir).expanduser()
    _check_export_dir(directory)
    _, metadata = read_config(directory)
    return _tokenizer_path(directory, metadata), _codec_spec(directory, metadata)


def _first(metadata: dict, keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, dict):  # {"codec": {"spec": ...}} / {"text_tokenizer": {"path": ...}}
            value = value.get("spec") or value.get("path")
        if value:
            return value
    return None


def _tokenizer_path(directory: Path, metadata: dict) -> Path:
    """The sentencepiece model named by the metadata (relative to the export), else the directory's only
    `*.model` file."""
    name = _first(metadata, TOKENIZER_KEYS)
    if name is None:
        found = sorted(directory.glob("*.model"))
        if len(found) != 1:
            raise SynthesisError(f"{directory / CONFIG_FILE} names no text tokenizer (metadata."
                                 f"{TOKENIZER_KEY}) and the directory holds {len(found)} *.model files")
        return found[0]
    path = Path(name) if Path(name).is_absolute() else directory / name
    if not path.is_file():
        raise SynthesisError(f"text tokenizer {path} (named by {directory / CONFIG_FILE}) is missing")
    return path


def _codec_spec(directory: Path, metadata: dict) -> str:
    """The codec reference: a named spec (`encodec_24khz@6`, `encodec_24khz:random`) or a codec directory
    (`Codec.save_pretrained`), resolved against the export directory when relative."""
    spec = _first(metadata, CODEC_KEYS)
    if spec is None:
        if (directory / "codec" / CONFIG_FILE).is_file():
            return str(directory / "codec")
        raise SynthesisError(f"{directory / CONFIG_FILE} names no codec (metadata.{CODEC_KEY}) and there is "
                             f"no codec/ directory beside it")
    local = directory / str(spec)
    return str(local) if local.is_dir() else str(spec)


def _apply_adapter(model: TTSModel, adapter: Path, base: Path | None = None) -> TTSModel:
    """Inject a LoRA adapter; it must have been trained on this very base model (`lm.adapters.lora`
    checks)."""
    if not adapter.is_dir():
        raise SynthesisError(f"adapter directory {adapter} does not exist")
    try:
        from lm.adapters.lora import load_adapter
    except ImportError as e:
        raise SynthesisError(f"cannot apply adapter {adapter}: lm.adapters.lora is not available "
                             f"({e})") from e
    try:
        return load_adapter(model, adapter, base_name=str(base) if base is not None else None).eval()
    except (OSError, ValueError) as e:  # wrong base model, missing / pickled weights, bad JSON
        raise SynthesisError(str(e)) from e
