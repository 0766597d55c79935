"""LoRA adapters (peft) for `TTSModel`: attach, save, load onto the right base model, merge.

    peft = attach_lora(model, LoraSettings(rank=16))      # base frozen; LoRA on AR + NAR projections
    save_adapter(peft, "out/adapter", base_identity(model, "models/default"))
    model = load_adapter(load_model("models/default"), "out/adapter")          # LoRA layers injected
    merged = merge_adapter(load_model("models/default"), "out/adapter")        # plain TTSModel, merged

An adapter directory is a standard peft one (`adapter_config.json` + `adapter_model.safetensors`) plus
`base_model.json`: the identity of the base model it was trained on (a fingerprint of its config and weights,
where it came from). Loading an adapter onto any other model fails with `AdapterMismatchError`, which names
both models: the low-rank update of one model's weights is noise to another's.

The fine-tuning loop that produces adapters is `lm.adapters.lora_finetune`;
`scripts/finetune_lora.py` drives it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lm.checkpoint import CONFIG_FILE as MODEL_CONFIG_FILE
from lm.checkpoint import MODEL_FILE, load_model, read_config, save_model
from lm.model.model import TTSModel

log = logging.getLogger(__name__)

# HF Llama projection names, the same in the AR decoder and the NAR head (both are `LlamaModel`s).
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = ATTENTION_TARGETS + MLP_TARGETS
PARTS = ("ar", "nar")
BASE_FILE = "base_model.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_WEIGHTS_FILE = "adapter_model.bin"
_SAFETENSORS_FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class AdapterError(ValueError):
    """An adapter directory that cannot be used; the message names the file and the reason."""


class AdapterMismatchError(AdapterError):
    """The adapter was trained on another base model; the message names both."""


@dataclass
class LoraSettings:
    """rank r, scaling alpha / r, dropout on the LoRA input; targets = projection names, parts = which
    Llama stacks (`ar` decoder, `nar` head) get them."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_TARGETS
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        self.targets, self.parts = tuple(self.targets), tuple(self.parts)
        unknown = sorted(set(self.targets) - set(DEFAULT_TARGETS))
        if unknown or not self.targets:
            raise ValueError(f"LoRA targets {list(self.targets)}: choose from {list(DEFAULT_TARGETS)}")
        if not self.parts or set(self.parts) - set(PARTS):
            raise ValueError(f"LoRA parts {list(self.parts)}: choose from {list(PARTS)}")
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"need rank >= 1, alpha > 0, 0 <= dropout < 1; got {self}")


def target_regex(targets: tuple[str, ...], parts: tuple[str, ...]) -> str:
    """A peft `target_modules` regex (full match on module names) for the projections of the decoder layers
    of `parts`: e.g. `ar.model.layers.3.self_attn.q_proj`. The code head and embeddings never match."""
    return rf"({'|'.join(parts)})\.model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(targets)})"


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=target_regex(settings.targets, settings.parts), bias="none")


def attach_lora(model: TTSModel, settings: LoraSettings) -> PeftModel:
    """Wrap `model` in a peft LoRA model: new zero-effect adapters (B = 0) on the target projections, every
    base weight frozen. The TTSModel is modified in place and stays reachable as `.base_model.model`."""
    _refuse_adapted(model, "attach a new adapter")
    if "nar" in settings.parts and model.nar is None:
        log.warning("the model has no NAR head (one codebook): LoRA goes on the AR decoder only")
    return get_peft_model(model, lora_config(settings))


def tts_model(model: PeftModel | TTSModel) -> TTSModel:
    """The TTSModel inside a peft wrapper (or the model itself)."""
    return model.base_model.model if isinstance(model, PeftModel) else model


def trainable_parameters(model: torch.nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in model.parameters())}


# ------------------------------------------------------------------------------------------ base identity


def base_fingerprint(model: TTSModel) -> str:
    """sha256 over the model config and every weight (name, shape, values rounded to bf16).

    Rounding to bf16 makes an fp32 and a bf16 load of the same export agree (the two precisions this
    project runs in), while two different trainings still differ in almost every value."""
    _refuse_adapted(model, "fingerprint the base model")
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.bfloat16)
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def base_identity(model: TTSModel, checkpoint: str | os.PathLike | None = None,
                  metadata: dict | None = None) -> dict[str, Any]:
    """What `base_model.json` records about the base model (call before `attach_lora`)."""
    meta = metadata or {}
    return {"fingerprint": base_fingerprint(model), "model_config": model.config.to_dict(),
            "checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
            "train_step": meta.get("train_step"), "preset": meta.get("preset")}


def stored_dtype(checkpoint_dir: str | os.PathLike) -> torch.dtype:
    """The floating dtype an export stores its weights in (training exports fp32, models/default fp16):
    adapters and merged exports are written in it, so their sizes compare like for like."""
    from safetensors import safe_open

    path = Path(checkpoint_dir) / MODEL_FILE
    try:
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                dtype = _SAFETENSORS_FLOATS.get(f.get_slice(name).get_dtype())
                if dtype is not None:
                    return dtype
    except Exception as err:  # safetensors raises its own error types for truncated / corrupt files
        raise ValueError(f"{path}: cannot read safetensors ({err})") from err
    return torch.float32


def _refuse_adapted(model: TTSModel, what: str) -> None:
    if isinstance(model, PeftModel) or any("lora_" in name for name, _ in model.named_parameters()):
        raise AdapterError(f"cannot {what}: the model already carries LoRA layers (load a fresh base model)")


# ------------------------------------------------------------------------------------------ save / load


def save_adapter(peft_model: PeftModel, directory: str | os.PathLike, identity: dict[str, Any],
                 state_dict: dict[str, torch.Tensor] | None = None, extra: dict | None = None,
                 dtype: torch.dtype = torch.float32) -> Path:
    """Write the adapter directory atomically (built as DIR.tmp, then renamed over DIR).

    state_dict: the LoRA weights to write (e.g. fp32 masters gathered from a DeepSpeed engine); default:
    the module's own. dtype: what they are stored as (loading casts them to the model's dtype). extra: more
    facts for base_model.json (e.g. the step and scores it was chosen at)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if state_dict is None:
        state_dict = {n: p.detach() for n, p in peft_model.named_parameters() if "lora_" in n}
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    peft_model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
    stored = str(dtype).replace("torch.", "")
    payload = {**identity, "lora": _lora_summary(peft_model), "stored_dtype": stored, **(extra or {})}
    (tmp / BASE_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def _lora_summary(peft_model: PeftModel) -> dict[str, Any]:
    cfg = peft_model.peft_config["default"]
    return {"rank": cfg.r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "target_modules": cfg.target_modules if isinstance(cfg.target_modules, str)
            else sorted(cfg.target_modules)}


def _check_files(adapter_dir: Path) -> None:
    """The files peft reads must be there, and the weights must not be a pickle."""
    if not adapter_dir.is_dir():
        raise AdapterError(f"adapter directory {adapter_dir} does not exist")
    if not (adapter_dir / CONFIG_FILE).is_file():
        raise AdapterError(f"{adapter_dir / CONFIG_FILE}: missing (not a peft adapter directory)")
    if not (adapter_dir / WEIGHTS_FILE).is_file():
        hint = (f"; refusing the pickle {PICKLE_WEIGHTS_FILE} (arbitrary code execution): re-save it with "
                f"safetensors") if (adapter_dir / PICKLE_WEIGHTS_FILE).is_file() else ""
        raise AdapterError(f"{adapter_dir / WEIGHTS_FILE}: missing{hint}")


def read_base_identity(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    """base_model.json of an adapter directory (after checking the files peft needs)."""
    adapter_dir = Path(adapter_dir)
    _check_files(adapter_dir)
    path = adapter_dir / BASE_FILE
    if not path.is_file():
        raise AdapterError(f"{path}: missing, so the adapter's base model is unknown (adapters written by "
                           f"lm.adapters.lora.save_adapter have it); pass check_base=False to load it anyway")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path}: not valid JSON ({err})") from err


def verify_base(model: TTSModel, adapter_dir: str | os.PathLike, base_name: str | None = None) -> None:
    """Raise AdapterMismatchError unless `model` is the base model the adapter was trained on."""
    recorded = read_base_identity(adapter_dir)
    this = base_name or "the given model"
    made_for = recorded.get("checkpoint") or "an unnamed model"
    if recorded.get("train_step") is not None:
        made_for += f" (step {recorded['train_step']})"
    config = model.config.to_dict()
    diff = {k: (v, config.get(k)) for k, v in recorded.get("model_config", {}).items() if config.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in sorted(diff.items())[:4])
        raise AdapterMismatchError(f"adapter {adapter_dir} was made for {made_for}, whose dimensions differ "
                                   f"from {this} ({shown})")
    mine = base_fingerprint(model)
    if recorded.get("fingerprint") != mine:
        raise AdapterMismatchError(
            f"adapter {adapter_dir} was made for base model {made_for} (fingerprint "
            f"{str(recorded.get('fingerprint'))[:16]}), but {this} has different weights (fingerprint "
            f"{mine[:16]}): load it onto the model it was fine-tuned from")


def _wrap(model: TTSModel, adapter_dir: str | os.PathLike, base_name: str | None, check: bool) -> PeftModel:
    adapter_dir = Path(adapter_dir)
    _refuse_adapted(model, f"load adapter {adapter_dir}")
    if check:
        verify_base(model, adapter_dir, base_name)
    else:
        _check_files(adapter_dir)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (OSError, RuntimeError, KeyError) as err:  # shape mismatch, unreadable safetensors ...
        raise AdapterError(f"cannot load adapter {adapter_dir}: {err}") from err


def load_adapter(model: TTSModel, adapter_dir: str | os.PathLike, base_name: str | None = None,
                 check_base: bool = True) -> TTSModel:
    """Inject the adapter's LoRA layers into `model` (in place; returned in eval mode, frozen). The model
    must be the adapter's base model (see `verify_base`); `base_name` names it in errors."""
    return tts_model(_wrap(model, adapter_dir, base_name, check_base)).eval()


def merge_adapter(model: TTSModel, adapter_dir: str | os.PathLike, base_name: str | None = None,
                  check_base: bool = True) -> TTSModel:
    """Load the adapter and fold it into the base weights: W + (alpha / r) B A. Returns a plain TTSModel
    (no LoRA modules) that `lm.checkpoint.save_model` can export."""
    merged = _wrap(model, adapter_dir, base_name, check_base).merge_and_unload()
    return merged.eval()


def adapter_adapts_ar(adapter_dir: str | os.PathLike) -> bool:
    """Whether the adapter has LoRA layers on the AR decoder (its target regex names `ar`; see
    `target_regex`). An adapter of another layout counts as adapting it."""
    try:
        targets = json.loads((Path(adapter_dir) / CONFIG_FILE).read_text()).get("target_modules")
    except (OSError, json.JSONDecodeError):
        return True
    match = re.match(r"\(([a-z|]+)\)\\\.model", targets) if isinstance(targets, str) else None
    return match is None or "ar" in match.group(1).split("|")


def adapter_bytes(adapter_dir: str | os.PathLike) -> int:
    return (Path(adapter_dir) / WEIGHTS_FILE).stat().st_size


def merge_to_export(checkpoint_dir: str | os.PathLike, adapter_dir: str | os.PathLike,
                    out_dir: str | os.PathLike) -> Path:
    """Write a self-contained export directory whose weights are the base's with the adapter merged in.

    Everything else of the base export (tokenizer, codec/, train_config.yaml ...) is copied, so relative
    references in its metadata stay valid; metadata.merged_adapter records what was merged. Built as
    OUT.tmp and renamed, so OUT is never half written."""
    checkpoint_dir, adapter_dir, out_dir = Path(checkpoint_dir), Path(adapter_dir), Path(out_dir)
    if out_dir.resolve() == checkpoint_dir.resolve():
        raise ValueError(f"--out {out_dir} is the base export itself: write the merged model elsewhere")
    config, metadata = read_config(checkpoint_dir)
    merged = merge_adapter(load_model(checkpoint_dir), adapter_dir, base_name=str(checkpoint_dir))
    dtype = stored_dtype(checkpoint_dir)  # as the base stores it (models/default: fp16)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in merged.state_dict().items()}
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    skip = shutil.ignore_patterns(MODEL_FILE, MODEL_CONFIG_FILE, "*.tmp")
    shutil.copytree(checkpoint_dir, tmp, ignore=skip)
    identity = read_base_identity(adapter_dir)
    meta = {**metadata, "merged_adapter": {"adapter": str(adapter_dir.resolve()),
                                           "base_checkpoint": str(checkpoint_dir.resolve()),
                                           "base_fingerprint": identity.get("fingerprint"),
                                           "lora": identity.get("lora"), "step": identity.get("step")}}
    if adapter_adapts_ar(adapter_dir):  # as base + adapter: see Synthesizer.from_pretrained
        meta["decode"] = {**meta.get("decode", {}), "ar_voice": "prompt"}
    save_model(None, config, tmp, metadata=meta, state_dict=state)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    log.info("merged %s into %s -> %s", adapter_dir, checkpoint_dir, out_dir)
    return out_dir


# ------------------------------------------------------------------------------------------ selection


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of the fine-tune. step 0 is the zero-shot baseline (the base model)."""

    step: int
    sim: float  # speaker similarity to the held-out clips (higher is better)
    wer: float  # word error rate on the held-out sentences, a fraction
    train_loss: float | None = None  # mean training loss since the previous evaluation
    seconds: float = 0.0  # wall time since the fine-tune started, at the end of this evaluation
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    best: int  # index into the curve of the point to keep (0: nothing beat the zero-shot baseline)
    stop: bool  # early stop: `patience` evaluations in a row without a better eligible point
    since_improvement: int


def select_best(curve: list[CurvePoint], wer_margin: float = 0.05, patience: int = 3,
                min_delta: float = 0.0) -> Selection:
    """The adapter to keep and whether to stop, from the evaluations so far (curve[0] = baseline).

    A point is eligible when its WER is at most the baseline's + `wer_margin` (absolute, e.g. 0.05 = 5
    points) and its SIM is a number; the best point is the eligible one with the highest SIM, and a later
    point must beat it by more than `min_delta` to replace it (ties keep the earlier, cheaper adapter).
    Training stops once `patience` evaluations in a row brought no new best (patience 0: never early).
    Replaying the same curve gives the same answer, so the rule can run after every evaluation."""
    if not curve:
        raise ValueError("select_best needs at least the baseline evaluation")
    limit = curve[0].wer + wer_margin if _finite(curve[0].wer) else float("inf")
    best, since = 0, 0
    best_sim = curve[0].sim if _finite(curve[0].sim) else float("-inf")
    for i, point in enumerate(curve[1:], start=1):
        eligible = _finite(point.sim) and (limit == float("inf") or (_finite(point.wer) and
                                                                     point.wer <= limit + 1e-12))
        if eligible and point.sim > best_sim + min_delta:
            best, best_sim, since = i, point.sim, 0
        else:
            since += 1
    return Selection(best=best, stop=patience > 0 and since >= patience, since_improvement=since)


def _finite(x: float | None) -> bool:
    return x is not None and x == x and abs(x) != float("inf")


def curve_markdown(curve: list[CurvePoint], best: int | None = None) -> str:
    """The curve as a Markdown table; the kept point is marked."""
    lines = ["| step | train loss | SIM | WER % | seconds | kept |", "|---:|---:|---:|---:|---:|:---:|"]
    for i, p in enumerate(curve):
        loss = "–" if p.train_loss is None else f"{p.train_loss:.4f}"
        sim = f"{p.sim:.4f}" if _finite(p.sim) else "–"
        wer = f"{100 * p.wer:.1f}" if _finite(p.wer) else "–"
        lines.append(f"| {p.step} | {loss} | {sim} | {wer} | {p.seconds:.0f} | {'*' if i == best else ''} |")
    return "\n".join(lines) + "\n"
