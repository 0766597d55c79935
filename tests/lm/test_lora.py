"""LoRA adapters on the tiny model (real peft, real safetensors files): only LoRA weights learn, an adapter
round-trips through its directory, merging gives the adapted model's logits and exports through
lm.checkpoint, an adapter refuses any other base model, the best-adapter / early-stopping rule, and the
deterministic held-out split."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from data_pipeline.text.tokenizer import TextTokenizer
from lm.adapters.lora import (
    BASE_FILE,
    DEFAULT_TARGETS,
    WEIGHTS_FILE,
    AdapterError,
    AdapterMismatchError,
    CurvePoint,
    LoraSettings,
    Selection,
    attach_lora,
    base_fingerprint,
    base_identity,
    curve_markdown,
    load_adapter,
    merge_adapter,
    merge_to_export,
    save_adapter,
    select_best,
    stored_dtype,
    tts_model,
)
from lm.adapters.lora_data import split_heldout
from lm.checkpoint import load_model
from lm.model.config import get_preset
from lm.model.losses import tts_loss
from lm.model.model import TTSModel
from lm.training.export import export_inference_dir

SPEECH = Path(__file__).resolve().parents[2] / "tests" / "data" / "speech"
SETTINGS = LoraSettings(rank=4, alpha=8.0, dropout=0.0)


def fresh_model(seed: int = 0, **overrides) -> TTSModel:
    torch.manual_seed(seed)
    return TTSModel(get_preset("tiny", **overrides)).eval()


def adapted(seed: int = 0):
    """A tiny model with a LoRA adapter whose B matrices are random (a fresh adapter has B = 0 and changes
    nothing, which would make every comparison below pass trivially)."""
    peft = attach_lora(fresh_model(seed), SETTINGS)
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    return peft.eval()


@pytest.fixture()
def lm_batch(make_batch):
    model = fresh_model()
    batch = make_batch(model.config, [5, 3], [9, 6], [4, 4], seed=1)
    return model.build_batch(batch, continuation_prob=0.0, generator=torch.Generator().manual_seed(0))


def logits(model: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(batch)
    return out.ar_logits, out.nar_logits


# ---- what LoRA touches -------------------------------------------------------------------------------------
def test_lora_targets_every_projection_of_ar_and_nar_and_nothing_else() -> None:
    peft = attach_lora(fresh_model(), SETTINGS)
    adapted_modules = {n.rsplit(".lora_A", 1)[0] for n, _ in peft.named_parameters() if ".lora_A." in n}
    model = tts_model(peft)
    expected = {f"base_model.model.{part}.model.layers.{i}.{block}.{name}"
                for part in ("ar", "nar") for i in range(2)
                for block, names in (("self_attn", DEFAULT_TARGETS[:4]), ("mlp", DEFAULT_TARGETS[4:]))
                for name in names}
    assert adapted_modules == expected
    assert not hasattr(model.ar.code_head, "lora_A")
    only_ar_attention = attach_lora(fresh_model(), LoraSettings(rank=2, targets=("q_proj", "v_proj"),
                                                                parts=("ar",)))
    names = {n for n, _ in only_ar_attention.named_parameters() if "lora_A" in n}
    assert len(names) == 4 and all(".ar." in n and ("q_proj" in n or "v_proj" in n) for n in names)


def test_only_lora_parameters_get_gradients(lm_batch) -> None:
    peft = attach_lora(fresh_model(), SETTINGS).train()
    before = {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" not in n}
    tts_loss(peft(lm_batch), lm_batch).loss.backward()
    with_grad = {n for n, p in peft.named_parameters() if p.grad is not None}
    lora = {n for n, _ in peft.named_parameters() if "lora_" in n}
    assert with_grad == lora  # every LoRA matrix, nothing else
    assert all(not p.requires_grad for n, p in peft.named_parameters() if n not in lora)
    # B starts at zero, so only B gets a non-zero gradient at the first step
    assert all(float(p.grad.abs().sum()) > 0 for n, p in peft.named_parameters() if "lora_B" in n)
    torch.optim.SGD([p for p in peft.parameters() if p.requires_grad], lr=0.1).step()
    after = {n: p for n, p in peft.named_parameters() if "lora_" not in n}
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_a_fresh_adapter_changes_nothing(lm_batch) -> None:
    base_ar, base_nar = logits(fresh_model(), lm_batch)
    ar, nar = logits(attach_lora(fresh_model(), SETTINGS).eval(), lm_batch)
    assert torch.equal(ar, base_ar) and torch.equal(nar, base_nar)


# ---- save / load / merge -----------------------------------------------------------------------------------
def test_adapter_round_trip_and_merge_give_the_adapted_logits(tmp_path, lm_batch) -> None:
    peft = adapted()
    want_ar, want_nar = logits(peft, lm_batch)
    base_ar, _ = logits(fresh_model(), lm_batch)
    assert not torch.allclose(want_ar, base_ar, atol=1e-4)  # the adapter does change the model
    save_adapter(peft, tmp_path / "adapter", base_identity(fresh_model(), "tiny-seed-0"))
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", WEIGHTS_FILE, BASE_FILE} <= files
    assert all("lora_" in k for k in load_file(tmp_path / "adapter" / WEIGHTS_FILE))

    loaded = load_adapter(fresh_model(), tmp_path / "adapter")
    ar, nar = logits(loaded, lm_batch)
    assert torch.equal(ar, want_ar) and torch.equal(nar, want_nar)

    merged = merge_adapter(fresh_model(), tmp_path / "adapter")
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    ar, nar = logits(merged, lm_batch)
    # W + s * B A in one matrix: the same function up to float rounding
    torch.testing.assert_close(ar, want_ar, rtol=0, atol=2e-5)
    torch.testing.assert_close(nar, want_nar, rtol=0, atol=2e-5)


def _tiny_export(directory: Path, seed: int = 0) -> Path:
    texts = []
    for tsv in sorted(SPEECH.glob("*/transcripts.tsv")):
        with tsv.open() as f:
            texts += [row["transcript"] for row in csv.DictReader(f, delimiter="\t")]
    tokenizer = TextTokenizer.train(texts, directory.with_name(directory.name + ".model"), vocab_size=400)
    config = get_preset("tiny", text_vocab_size=tokenizer.vocab_size)
    torch.manual_seed(seed)
    return export_inference_dir(directory, config, TTSModel(config).state_dict(),
                                directory.with_name(directory.name + ".model"), "encodec_24khz:random")


def test_merged_export_loads_through_lm_checkpoint(tmp_path, make_batch) -> None:
    export = _tiny_export(tmp_path / "export")
    base = load_model(export)
    identity = base_identity(base, export)
    peft = attach_lora(base, SETTINGS)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    save_adapter(peft, tmp_path / "adapter", identity)
    merged_dir = merge_to_export(export, tmp_path / "adapter", tmp_path / "merged")
    assert sorted(p.name for p in merged_dir.iterdir()) == ["config.json", "model.safetensors",
                                                           "tokenizer.model"]
    meta = json.loads((merged_dir / "config.json").read_text())["metadata"]
    assert meta["merged_adapter"]["base_fingerprint"] == identity["fingerprint"]
    assert meta["codec"] == "encodec_24khz:random" and meta["text_tokenizer"] == "tokenizer.model"

    merged = load_model(merged_dir)
    batch = make_batch(merged.config, [4, 6], [7, 5], [3, 3], seed=2)
    lm = merged.build_batch(batch, continuation_prob=0.0, generator=torch.Generator().manual_seed(0))
    want = logits(load_adapter(load_model(export), tmp_path / "adapter", base_name=str(export)), lm)
    got = logits(merged, lm)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
    assert base_fingerprint(merged) != identity["fingerprint"]  # a merged model is another base
    with pytest.raises(ValueError, match="base export itself"):
        merge_to_export(export, tmp_path / "adapter", export)


def test_an_fp16_base_gets_an_fp16_adapter_and_an_fp16_merged_export(tmp_path, make_batch) -> None:
    export = _tiny_export(tmp_path / "export")
    weights = load_file(export / "model.safetensors")  # stored as models/default is: fp16 on disk
    save_file({k: v.half() for k, v in weights.items()}, export / "model.safetensors")
    assert stored_dtype(export) == torch.float16
    peft = attach_lora(load_model(export), SETTINGS)
    identity = base_identity(load_model(export), export)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    save_adapter(peft, tmp_path / "adapter", identity, dtype=stored_dtype(export))
    assert {v.dtype for v in load_file(tmp_path / "adapter" / WEIGHTS_FILE).values()} == {torch.float16}
    batch = make_batch(peft.base_model.model.config, [4, 6], [7, 5], [3, 3], seed=2)
    lm = peft.base_model.model.build_batch(batch, 0.0, torch.Generator().manual_seed(0))
    loaded = load_adapter(load_model(export), tmp_path / "adapter")  # fp32 modules, fp16 files
    for a, b in zip(logits(loaded, lm), logits(peft.eval(), lm), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)  # the adapter rounded to fp16, nothing else
    merged = merge_to_export(export, tmp_path / "adapter", tmp_path / "merged")
    assert stored_dtype(merged) == torch.float16
    for a, b in zip(logits(load_model(merged), lm), logits(loaded, lm), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


# ---- the command-line tools --------------------------------------------------------------------------------
def _script_main(name: str):
    """scripts/NAME.py's `main(argv)`, imported into this process (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_generate_adapter_changes_the_voice_and_merge_lora_generates_the_same(tmp_path, capsys) -> None:
    """generate.py --adapter really applies the adapter (same seed, other audio than the base), and
    merge_lora.py's export generates exactly what base + adapter generates."""
    export = _tiny_export(tmp_path / "export")
    peft = attach_lora(load_model(export), SETTINGS)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:  # large enough that the sampled codes move for this seed
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)
    save_adapter(peft, tmp_path / "adapter", base_identity(load_model(export), export))
    generate, merge = _script_main("generate"), _script_main("merge_lora")
    prompt = SPEECH / "ljspeech-sample" / "LJ001-0002.wav"
    common = ["--prompt-audio", str(prompt), "--text", "Printing is an art.", "--seed", "1",
              "--max-seconds", "0.3", "--threads", "1"]

    def wav(*args: str) -> np.ndarray:
        out = tmp_path / f"out-{len(list(tmp_path.glob('out-*.wav')))}.wav"
        assert generate([*common, *args, "--out", str(out)]) == 0, capsys.readouterr().err
        samples, rate = sf.read(out, dtype="int16")
        assert rate == 24000 and len(samples) > 0
        return samples

    base = wav("--checkpoint", str(export))
    assert np.array_equal(wav("--checkpoint", str(export)), base)  # the seed fixes the output
    adapted_wav = wav("--checkpoint", str(export), "--adapter", str(tmp_path / "adapter"))
    assert len(adapted_wav) == len(base) and not np.array_equal(adapted_wav, base)

    assert merge(["--checkpoint", str(export), "--adapter", str(tmp_path / "adapter"),
                  "--out", str(tmp_path / "merged")]) == 0
    merged_wav = wav("--checkpoint", str(tmp_path / "merged"))
    np.testing.assert_array_equal(merged_wav, adapted_wav)



@pytest.mark.parametrize("parts", [("ar", "nar"), ("nar",)])
def test_an_adapted_ar_reads_the_prompts_voice_not_a_house_voice(tmp_path, parts) -> None:
    """A base whose default is ar_voice='house' (models/default): with a LoRA adapter on its AR, or merged
    with it, the AR reads the prompt (the adapter taught it that voice); an explicit ar_voice still wins. An
    adapter on the NAR alone leaves the house voices on."""
    import json

    from lm.inference.house_voices import HouseVoice, HouseVoices
    from lm.inference.synthesizer import Synthesizer

    export = _tiny_export(tmp_path / "export")
    config = json.loads((export / "config.json").read_text())
    config["metadata"]["decode"] = {"ar_voice": "house"}
    (export / "config.json").write_text(json.dumps(config))
    q = load_model(export).config.num_codebooks
    HouseVoices([HouseVoice("v", torch.zeros(q, 10, dtype=torch.long), torch.ones(256) / 16)]).save(export)
    settings = LoraSettings(rank=4, alpha=8.0, dropout=0.0, parts=parts)
    save_adapter(attach_lora(load_model(export), settings), tmp_path / "adapter",
                 base_identity(load_model(export), export))
    expected = "prompt" if "ar" in parts else "house"
    assert Synthesizer.from_pretrained(export).defaults.ar_voice == "house"
    assert Synthesizer.from_pretrained(export, adapter=tmp_path / "adapter").defaults.ar_voice == expected
    assert Synthesizer.from_pretrained(export, adapter=tmp_path / "adapter",
                                       ar_voice="v").defaults.ar_voice == "v"
    assert _script_main("merge_lora")(["--checkpoint", str(export), "--adapter", str(tmp_path / "adapter"),
                                       "--out", str(tmp_path / "merged")]) == 0
    merged = Synthesizer.from_pretrained(tmp_path / "merged")
    assert merged.defaults.ar_voice == expected and merged.house_voices is not None  # the bank is copied


# ---- the wrong base model ----------------------------------------------------------------------------------
def test_an_adapter_for_another_base_model_is_refused_naming_both(tmp_path) -> None:
    save_adapter(adapted(seed=0), tmp_path / "adapter", base_identity(fresh_model(0), tmp_path / "base-a"))
    other = fresh_model(seed=1)
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(other, tmp_path / "adapter", base_name="models/base-b")
    message = str(err.value)
    assert str(tmp_path / "base-a") in message and "models/base-b" in message
    assert base_fingerprint(fresh_model(0))[:16] in message and base_fingerprint(other)[:16] in message
    assert not any("lora_" in n for n, _ in other.named_parameters())  # refused before touching it

    with pytest.raises(AdapterMismatchError, match="text_vocab_size: 256 vs 400"):
        merge_adapter(fresh_model(0, text_vocab_size=400), tmp_path / "adapter")
    # the same weights in bf16 are the same base model
    load_adapter(fresh_model(0).to(torch.bfloat16), tmp_path / "adapter")


def test_broken_adapter_directories_are_refused_with_the_file_named(tmp_path) -> None:
    adapter = save_adapter(adapted(), tmp_path / "adapter", base_identity(fresh_model()))
    (adapter / BASE_FILE).unlink()
    with pytest.raises(AdapterError, match=f"{BASE_FILE}: missing"):
        load_adapter(fresh_model(), adapter)
    load_adapter(fresh_model(), adapter, check_base=False)  # explicitly unchecked: peft loads it
    weights = load_file(adapter / WEIGHTS_FILE)
    (adapter / WEIGHTS_FILE).unlink()
    torch.save(weights, adapter / "adapter_model.bin")
    with pytest.raises(AdapterError, match="refusing the pickle"):
        load_adapter(fresh_model(), adapter, check_base=False)
    save_file(weights, adapter / WEIGHTS_FILE)
    with pytest.raises(AdapterError, match="already carries LoRA"):
        load_adapter(load_adapter(fresh_model(), adapter, check_base=False), adapter, check_base=False)


# ---- keeping the best adapter, stopping early --------------------------------------------------------------
def curve(*points: tuple[float, float]) -> list[CurvePoint]:
    """(sim, wer) per evaluation, every 10 steps from step 0."""
    return [CurvePoint(step=10 * i, sim=s, wer=w) for i, (s, w) in enumerate(points)]


def test_best_is_the_highest_similarity_and_training_stops_after_patience() -> None:
    c = curve((0.50, 0.10), (0.55, 0.10), (0.60, 0.12), (0.58, 0.10), (0.59, 0.10))
    # after three evaluations the latest is the best; the rule keeps no state, so replaying the first three
    # after the whole curve gives the same answer
    first_three = Selection(best=2, stop=False, since_improvement=0)
    assert select_best(c[:3], patience=2) == first_three
    select_best(c, wer_margin=0.05, patience=2)
    assert select_best(c[:3], patience=2) == first_three
    sel = select_best(c[:4], wer_margin=0.05, patience=2)
    assert (sel.best, sel.stop, sel.since_improvement) == (2, False, 1)
    sel = select_best(c, wer_margin=0.05, patience=2)
    assert (sel.best, sel.stop) == (2, True)
    assert not select_best(c, patience=3).stop and not select_best(c, patience=0).stop


def test_a_point_whose_wer_rose_past_the_margin_is_never_kept() -> None:
    c = curve((0.50, 0.10), (0.56, 0.14), (0.70, 0.16), (0.65, 0.1501))
    assert select_best(c, wer_margin=0.05, patience=5).best == 1  # 0.70 and 0.65 cost > 5 WER points
    assert select_best(c, wer_margin=0.07, patience=5).best == 2
    # ineligible points count towards patience: rising similarity bought with WER is not progress
    assert select_best(c, wer_margin=0.05, patience=2).stop


def test_the_baseline_is_kept_when_nothing_beats_it() -> None:
    c = curve((0.60, 0.05), (0.58, 0.05), (0.60, 0.04), (0.55, 0.30))
    sel = select_best(c, patience=3)
    assert (sel.best, sel.stop) == (0, True)  # a tie does not replace the earlier point
    assert select_best(curve((0.6, 0.05), (0.62, 0.05)), min_delta=0.03).best == 0
    assert select_best(curve((0.6, 0.05), (0.64, 0.05)), min_delta=0.03).best == 1
    with pytest.raises(ValueError):
        select_best([])


def test_missing_scores_never_win() -> None:
    nan = math.nan
    assert select_best(curve((0.5, 0.1), (nan, 0.1), (0.6, nan)), patience=0).best == 0
    # a baseline without scores: any scored point beats it, and the WER limit cannot apply
    assert select_best(curve((nan, nan), (0.3, 0.9)), patience=0).best == 1
    table = curve_markdown(curve((0.5, 0.1), (nan, 0.2)), best=0)
    assert table.splitlines()[2] == "| 0 | – | 0.5000 | 10.0 | 0 | * |"
    assert table.splitlines()[3] == "| 10 | – | – | 20.0 | 0 |  |"


# ---- the held-out split ------------------------------------------------------------------------------------
def test_heldout_split_is_deterministic_disjoint_and_large_enough() -> None:
    keys = [f"LJ001-{i:04d}" for i in range(1, 34)]
    train, held = split_heldout(keys, fraction=0.15, minimum=3, seed=5)
    assert (train, held) == split_heldout(list(reversed(keys)), fraction=0.15, minimum=3, seed=5)
    assert len(held) == 5 and not set(train) & set(held) and sorted(train + held) == keys
    assert split_heldout(keys, 0.15, 3, seed=6)[1] != held
    assert len(split_heldout(keys[:8], 0.15, 3, seed=5)[1]) == 3  # at least `minimum`
    with pytest.raises(ValueError, match="fewer than 2 to train on"):
        split_heldout(keys[:4], 0.15, 3, seed=5)
