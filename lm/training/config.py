"""The training run's configuration: one tree of dataclasses, the single source of truth for batch shape,
optimizer, schedule and model size (DeepSpeed JSON files hold system settings only).

Resolution order, later wins: dataclass defaults -> `--preset` model -> YAML file (`--config`) -> CLI flags
-> `a.b=value` overrides. Unknown keys and values of the wrong type are errors that name the key.

    # scripts/train.py --data runs/tokens --out runs/exp --preset tiny --deepspeed ds_configs/zero2.json \\
    #     optim.lr=1e-3 data.batching.max_frames=4000 max_steps=2000
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from data_pipeline.loading.batching import BatchingConfig
from data_pipeline.text.phonemes import parse_frontend
from lm.model.config import PRESETS, ModelConfig, get_preset


class ConfigError(ValueError):
    """A bad key, value or type in a training config, YAML file or override; the message names the key."""


@dataclass
class DataConfig:
    train: str = ""  # token shards: directory, glob, brace pattern or URL (`--data`)
    val: str | None = None  # validation shards; None: hold out the last `val_shards` of `train`
    val_shards: int = 1  # shards held out for validation when `val` is None; 0 disables validation
    num_codebooks: int | None = None  # train on the first N codebooks; None: all codebooks in the shards
    num_workers: int = 0  # DataLoader worker processes per rank
    shuffle_buffer: int = 1000
    continuation_prob: float = 0.25  # share of examples laid out in continuation mode (prompt transcript)
    # share of the AR's target-frame input codes replaced by random codes (labels stay clean): the AR learns
    # to lean on its text / phones instead of copying its own previous codes, which drift when it runs free
    # (scripts/diagnose_stages.py: row ar_tf against ar_given). 0: off
    code_noise: float = 0.0
    # share of the AR's target-frame input codes replaced by codes it draws itself from a no-grad
    # teacher-forced pass (parallel scheduled sampling, lm.model.batch.self_feed_target_codes), at
    # `self_feed_temperature` (0: argmax); applied before code_noise. One extra AR forward a step. 0: off
    self_feed: float = 0.0
    self_feed_temperature: float = 1.0
    # phone-aligned models: share of rows trained without their target phones
    # (lm.model.batch.drop_target_phones), so inference can guide on them (decode phone_guidance > 1). 0: off
    phone_dropout: float = 0.0
    batching: BatchingConfig = field(default_factory=BatchingConfig)


@dataclass
class TokenizerConfig:
    path: str | None = None  # an existing sentencepiece model; None: train one on the training shards
    vocab_size: int = 4096  # for training; lowered automatically when the corpus is too small
    # "espeak-ng:en-us": pieces over espeak-ng's IPA of the text (data_pipeline/text/phonemes.py);
    # None: spelling
    frontend: str | None = None


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # on matrices only; norms, biases and 1-d weights are not decayed
    grad_clip: float = 1.0  # global gradient-norm clipping; 0 disables


@dataclass
class ScheduleConfig:
    warmup_steps: int = 100  # linear warmup from lr/warmup_steps to lr
    total_steps: int | None = None  # cosine length; None: max_steps (fixed at the first start of a run)
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio


@dataclass
class LogConfig:
    every: int = 10  # optimizer steps between console / TensorBoard lines
    tensorboard: bool = True
    peak_tflops: float | None = None  # per-device peak for MFU; None: looked up from the GPU name


@dataclass
class AlignConfig:
    """Guided attention (DC-TTS) on a few AR heads: pushes them to read the transcript near the diagonal, so a
    small model learns to read its text in far fewer steps. weight 0 disables it (no extra compute)."""

    weight: float = 0.0
    layer: int = 2  # AR layer (0-based) whose first `heads` heads are guided
    heads: int = 2
    sigma: float = 0.2  # width of the diagonal band, as a fraction of the utterance


@dataclass
class TrainConfig:
    preset: str = "tiny"
    model: ModelConfig = field(default_factory=lambda: get_preset("tiny"))
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    log: LogConfig = field(default_factory=LogConfig)
    codec: str | None = None  # codec spec for the export; None: the spec recorded in the token shards
    max_steps: int = 10000  # optimizer steps; the run stops (and exports) here
    gradient_accumulation_steps: int = 1
    activation_checkpointing: bool = False
    nar_weight: float = 1.0
    align: AlignConfig = field(default_factory=AlignConfig)
    precision: str = "auto"  # auto (bf16 on a GPU that supports it, else fp32) | bf16 | fp32
    seed: int = 1234
    eval_every: int = 500  # steps between validation passes; 0 disables
    eval_batches: int = 50  # validation batches per pass (all ranks together)
    checkpoint_every: int = 500  # steps between checkpoints; 0: only at the end and on SIGTERM
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    export: bool = True  # write OUT/export at the end
    # An export or published model (e.g. models/default) whose weights, tokenizer and step count start a run
    # that has no checkpoint yet (lm/training/warm_start.py); ignored once the run has checkpoints.
    init_from: str | None = None

    def to_dict(self) -> dict:
        return to_plain(self)


# ----------------------------------------------------------------------------------------------- parsing


def to_plain(obj: Any) -> Any:
    """Dataclasses -> nested dicts of YAML/JSON scalars (tuples become lists)."""
    if is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, from_text: bool) -> Any:
    """Check (and, for text from the command line, convert) `value` against the annotation `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_text and isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, from_text)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is not a {_type_name(tp)}")
    if origin in (tuple, list):
        if from_text and isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like [0.9, 0.95], got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{key}[{i}]", False) for i, (v, a) in pairs)
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, f"{key}[{i}]", False) for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if from_text or isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_mapping(obj: Any, mapping: dict, prefix: str = "", from_text: bool = False) -> Any:
    """A copy of dataclass `obj` with the nested `mapping` applied; unknown keys and wrong types raise
    ConfigError. Nested dataclasses are updated field by field, and re-validated by their __post_init__."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {mapping!r}")
    hints = _hints(type(obj))
    names = [f.name for f in fields(obj)]
    changes = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}; known keys here: {', '.join(names)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            changes[key] = apply_mapping(current, value, f"{path}.", from_text)
        else:
            changes[key] = _coerce(value, hints[key], path, from_text)
    try:
        return dataclasses.replace(obj, **changes)
    except ValueError as err:  # a __post_init__ check (e.g. ModelConfig head divisibility)
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def parse_overrides(items: list[str]) -> list[tuple[list[str], str]]:
    """`a.b=value` strings -> ([a, b], "value"); malformed items raise ConfigError."""
    parsed = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form a.b=value")
        parsed.append((key.split("."), value))
    return parsed


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: invalid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return data


def resolve_config(
    base: TrainConfig | None = None,
    yaml_data: dict | None = None,
    flags: dict | None = None,
    overrides: list[str] | None = None,
) -> TrainConfig:
    """Build the run's TrainConfig. A `preset` (in YAML, flags or overrides) replaces the model section with
    that preset before the remaining `model.*` settings apply."""
    layers: list[tuple[dict, bool]] = [(yaml_data or {}, False), (flags or {}, False)]
    layers += [(_nest(path, value), True) for path, value in parse_overrides(overrides or [])]
    cfg = base if base is not None else TrainConfig()
    preset = cfg.preset if base is not None else None
    for layer, _ in layers:
        if "preset" in layer:
            preset = layer["preset"]
    if preset is not None and (base is None or preset != base.preset):
        if preset not in PRESETS:
            raise ConfigError(f"preset: unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
        cfg = dataclasses.replace(cfg, preset=preset, model=get_preset(preset))
    for layer, from_text in layers:
        layer = {k: v for k, v in layer.items() if k != "preset"}
        cfg = apply_mapping(cfg, layer, from_text=from_text)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks with messages that name the key."""
    positive = {"max_steps": cfg.max_steps, "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
                "log.every": cfg.log.every}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    non_negative = {"eval_every": cfg.eval_every, "checkpoint_every": cfg.checkpoint_every,
                    "schedule.warmup_steps": cfg.schedule.warmup_steps,
                    "data.val_shards": cfg.data.val_shards,
                    "optim.grad_clip": cfg.optim.grad_clip, "optim.weight_decay": cfg.optim.weight_decay,
                    "data.num_workers": cfg.data.num_workers}
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.keep_checkpoints < 1:
        raise ConfigError(f"keep_checkpoints must be >= 1, got {cfg.keep_checkpoints}")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision must be auto, bf16 or fp32, got {cfg.precision!r}")
    if not 0.0 <= cfg.schedule.min_lr_ratio <= 1.0:
        raise ConfigError(f"schedule.min_lr_ratio must be in [0, 1], got {cfg.schedule.min_lr_ratio}")
    if not 0.0 <= cfg.data.continuation_prob <= 1.0:
        raise ConfigError(f"data.continuation_prob must be in [0, 1], got {cfg.data.continuation_prob}")
    if not 0.0 <= cfg.data.code_noise < 1.0:
        raise ConfigError(f"data.code_noise must be in [0, 1), got {cfg.data.code_noise}")
    if not 0.0 <= cfg.data.self_feed < 1.0 or cfg.data.self_feed_temperature < 0:
        raise ConfigError(f"data.self_feed must be in [0, 1) and data.self_feed_temperature >= 0, got "
                          f"{cfg.data.self_feed}, {cfg.data.self_feed_temperature}")
    if not 0.0 <= cfg.data.phone_dropout < 1.0:
        raise ConfigError(f"data.phone_dropout must be in [0, 1), got {cfg.data.phone_dropout}")
    if cfg.schedule.total_steps is not None and cfg.schedule.total_steps < 1:
        raise ConfigError(f"schedule.total_steps must be >= 1, got {cfg.schedule.total_steps}")
    if cfg.align.weight < 0 or cfg.align.sigma <= 0:
        raise ConfigError(f"align.weight must be >= 0 and align.sigma > 0, got {cfg.align}")
    if cfg.align.weight > 0 and not (
        0 <= cfg.align.layer < cfg.model.ar_num_layers and 1 <= cfg.align.heads <= cfg.model.ar_num_heads
    ):
        raise ConfigError(f"align.layer must be in [0, {cfg.model.ar_num_layers}) and align.heads in "
                          f"[1, {cfg.model.ar_num_heads}] for this model, got {cfg.align}")
    if cfg.eval_batches < 1:
        raise ConfigError(f"eval_batches must be >= 1, got {cfg.eval_batches}")
    if cfg.tokenizer.frontend:
        try:
            parse_frontend(cfg.tokenizer.frontend)
        except ValueError as e:
            raise ConfigError(f"tokenizer.frontend: {e}") from e


def config_from_dict(data: dict) -> TrainConfig:
    """A TrainConfig saved with `to_dict()` (e.g. a checkpoint's train_config.yaml), strictly checked."""
    data = dict(data)
    preset = data.pop("preset", "tiny")
    if preset not in PRESETS:
        raise ConfigError(f"preset: unknown model preset {preset!r}")
    cfg = TrainConfig(preset=preset, model=get_preset(preset))
    cfg = apply_mapping(cfg, data)
    validate(cfg)
    return cfg


def config_diff(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Flattened keys whose values differ: {"optim.lr": (a, b)}."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def dump_yaml(cfg: TrainConfig, path: str | Path, header: str = "") -> Path:
    path = Path(path)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    path.write_text((header + "\n" if header else "") + text)
    return path


__all__ = [
    "ConfigError",
    "DataConfig",
    "LogConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TokenizerConfig",
    "TrainConfig",
    "apply_mapping",
    "config_diff",
    "config_from_dict",
    "dump_yaml",
    "load_yaml",
    "parse_overrides",
    "resolve_config",
    "validate",
]
