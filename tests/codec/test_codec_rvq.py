"""RVQCodec (our trainable codec): the Codec interface, training, checkpoints, the training script."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec import load_audio, load_codec
from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from codec.base import CONFIG_FILE
from codec.training.augment import AugmentConfig, augment, change_speed
from codec.training.losses import CodecLoss
from codec.training.trainer import TrainConfig, lr_at, progress_of
from codec.training.trainer import train as train_codec

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech"
ARCTIC = SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_axb_a0005.wav"  # 1.6 s, 16 kHz


def tiny_rvq_config(**overrides) -> RVQCodecConfig:
    base = dict(encoder_channels=4, decoder_channels=4, dimension=16, dilations=(1,), max_channels=32,
                spectral_dim=32, encoder_layers=1, decoder_layers=2, num_codebooks=4, codebook_size=64,
                kmeans_iters=2, threshold_ema_dead_code=0.0)
    return RVQCodecConfig(**{**base, **overrides})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core box OpenMP spinning slows them 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_rvq(seed: int = 0, **overrides) -> RVQCodec:
    torch.manual_seed(seed)
    return RVQCodec(tiny_rvq_config(**overrides))


@pytest.fixture(scope="module")
def arctic() -> torch.Tensor:
    wav, sr = load_audio(ARCTIC)
    assert sr == 16_000
    return wav  # [1, T]


@pytest.fixture(scope="module")
def trained_once(arctic) -> tuple[RVQCodec, list[float]]:
    """A tiny spectral codec after 25 Adam steps on 0.8 s crops of a real clip (k-means initialised)."""
    torch.manual_seed(0)
    model = RVQCodec(tiny_rvq_config(architecture="spectral", quantizer_dropout=0.0)).train()
    loss_fn = CodecLoss(model.sample_rate)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = torch.stack([arctic[:, 0:12800], arctic[:, 6400:19200]])  # [2, 1, 12800], 40 frames each
    losses = []
    for _ in range(25):
        out = model(batch)
        loss, _ = loss_fn(out.wav, batch, out.commit_loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.fixture
def trained(trained_once):
    """The module's trained codec, shared by several tests: checked after each one that used it, pass or
    fail, so a test that left it in training mode or with moved codebooks cannot change the tests after it
    (a test that needs either works on a copy)."""
    model, _ = trained_once
    assert not model.training, "an earlier test left the shared codec in training mode"
    codebooks = model.quantizer.codebooks.clone()
    yield trained_once
    assert not model.training, "the test left the shared codec in training mode"
    assert torch.equal(model.quantizer.codebooks, codebooks), "the test moved the shared codec's codebooks"


@pytest.mark.parametrize("architecture", ["seanet", "spectral"])
def test_interface_shapes_and_frame_counts(arctic, architecture) -> None:
    codec = tiny_rvq(architecture=architecture, kmeans_init=False).eval()
    assert (codec.sample_rate, codec.frame_rate, codec.hop_length) == (16_000, 50.0, 320)
    stereo = torch.stack([arctic.repeat(2, 1)[:, :11025], torch.zeros(2, 11025)])  # [2, 2, 11025]
    enc = codec.encode(stereo, torch.tensor([11025, 5000]), sample_rate=22_050)
    # 11025 samples at 22.05 kHz -> 8000 at 16 kHz -> 25 frames; 5000 -> 3629 -> 12 frames
    assert enc.codes.shape == (2, 4, 25) and enc.codes.dtype == torch.long
    assert enc.frame_lengths.tolist() == [25, 12]
    assert (enc.codes[1, :, 12:] == 0).all()
    assert 0 <= int(enc.codes.min()) and int(enc.codes.max()) < 64
    wav = codec.decode(enc.codes)
    assert wav.shape == (2, 1, 25 * 320) and torch.isfinite(wav).all()
    assert codec.decode(enc.codes[:, :2]).shape == (2, 1, 8000)  # a prefix of the codebooks decodes too
    with pytest.raises(ValueError, match="codebooks"):
        codec.decode(torch.zeros(1, 5, 3, dtype=torch.long))


def test_training_steps_reduce_the_loss(trained) -> None:
    _, losses = trained
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("architecture", ["seanet", "spectral"])
def test_training_forward_drops_codebooks_and_keeps_shapes(arctic, architecture) -> None:
    model = tiny_rvq(architecture=architecture, quantizer_dropout=1.0, kmeans_init=False).train()
    out = model(arctic[None, :, :6400])
    assert out.wav.shape == (1, 1, 6400) and out.codes.shape == (1, 4, 20)
    assert (out.codes[:, 0] >= 0).all()  # dropout keeps at least the first codebook
    out.wav.square().mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="multiple of 320"):
        model(arctic[None, :, :6401])


def test_save_load_round_trip_gives_identical_codes(trained, arctic, tmp_path) -> None:
    model, _ = trained
    x = arctic[None, :, :16000]
    codes = model.encode(x).codes
    exact = load_codec(str(model.save_pretrained(tmp_path / "fp32", dtype=torch.float32)))
    assert isinstance(exact, RVQCodec) and not exact.training
    assert torch.equal(exact.encode(x).codes, codes)
    assert torch.equal(exact.decode(codes), model.decode(codes))
    # the default export stores fp16 (half the size); a code may flip where two entries are nearly tied
    half = load_codec(str(model.save_pretrained(tmp_path / "fp16")))
    assert isinstance(half, RVQCodec) and half.encoder.proj.weight.dtype == torch.float32
    assert (half.encode(x).codes == codes).float().mean() > 0.9
    meta = json.loads((tmp_path / "fp16" / CONFIG_FILE).read_text())
    assert meta["backend"] == "rvq" and meta["config"]["num_codebooks"] == 4


def test_encoding_does_not_update_codebooks(trained, arctic) -> None:
    # a copy: the module's shared codec stays in eval mode whatever happens here
    model = copy.deepcopy(trained[0]).train()  # even a codec left in training mode must not move its
    before = model.quantizer.codebooks.clone()  # codebooks while encoding
    model.encode(arctic[None, :, :8000])
    assert torch.equal(model.quantizer.codebooks, before) and model.training


def test_bad_checkpoint_config_is_refused(trained, tmp_path) -> None:
    model, _ = trained
    directory = model.save_pretrained(tmp_path / "bad")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    meta["config"]["not_a_field"] = 1
    (directory / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not_a_field"):
        load_codec(str(directory))


def test_augment_keeps_shape_and_level_in_range(arctic) -> None:
    gen = torch.Generator().manual_seed(0)
    batch = arctic[None, :, :8000].repeat(4, 1, 1)
    always = AugmentConfig(eq_prob=1.0, reverb_prob=1.0, noise_prob=1.0)
    out = augment(batch, 16_000, always, gen)
    assert out.shape == batch.shape and torch.isfinite(out).all()
    assert float(out.abs().max()) <= 0.99 + 1e-6
    assert not torch.allclose(out[0], out[1])  # settings are drawn per item
    faster = change_speed(arctic[None, :, :8800], 1.1, 8000)
    assert faster.shape == (1, 1, 8000)


def test_schedule_follows_time_budget() -> None:
    cfg = TrainConfig(data=[], out="", max_steps=1000, warmup_steps=10, time_budget=100.0)
    assert progress_of(cfg, 100, 50.0) == 0.5  # time runs ahead of steps here
    assert lr_at(cfg, 5, 0.0) < lr_at(cfg, 20, 0.0) == pytest.approx(cfg.lr)
    assert lr_at(cfg, 500, 1.0) == pytest.approx(cfg.lr * cfg.min_lr_ratio)


@pytest.mark.integration
def test_train_script_trains_resumes_and_exports(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("script_train_codec", ROOT / "scripts" / "train_codec.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # scripts/ is not a package
    main = script.main
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_rvq_config(architecture="spectral").to_dict()))
    out = tmp_path / "run"
    args = ["--data", str(ARCTIC.parent), "--eval-data", str(ARCTIC), "--out", str(out),
            "--batch-size", "2", "--segment-seconds", "0.4", "--codec-config", str(config),
            "--log-every", "2", "--eval-every", "3", "--ckpt-every", "3", "--device", "cpu"]
    assert main([*args, "--max-steps", "3"]) == 0
    state = json.loads((out / "ckpt" / "state.json").read_text())
    assert state["step"] == 3 and (out / "ckpt" / "trainer.pt").is_file()
    assert main([*args, "--max-steps", "5", "--resume"]) == 0
    assert json.loads((out / "ckpt" / "state.json").read_text())["step"] == 5
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("stoi" in r for r in records) and any("mel" in r for r in records)
    codec = load_codec(str(out / "export"))
    assert isinstance(codec, RVQCodec) and codec.num_codebooks == 4
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        main([*args, "--max-steps", "6", "--resume", str(tmp_path / "missing")])


def _train_tiny(out: Path, resume: bool = False, time_limit: float | None = None) -> dict:
    """6 steps of codec.training.trainer.train on the Arctic clips with the default augmentation (speed
    changes and quantizer dropout: Python's `random`; crops, EQ, reverb, noise: the data generator),
    k-means-initialised EMA codebooks with dead-code expiry (torch's RNG), a train log line every step.
    time_limit=0 stops the run right after its first step, with a checkpoint (what a kill leaves behind, at a
    known step)."""
    cfg = TrainConfig(data=[str(ARCTIC.parent)], out=str(out), max_steps=6, batch_size=2, segment_seconds=0.4,
                      lr=3e-3, warmup_steps=2, log_every=1, eval_every=1000, ckpt_every=1000, device="cpu",
                      time_limit=time_limit)
    return train_codec(cfg, tiny_rvq_config(architecture="spectral", threshold_ema_dead_code=1.0),
                       resume="auto" if resume else None)


def _trained_state(out: Path) -> tuple[dict, dict, list[dict]]:
    weights = load_file(str(out / "ckpt" / "model.safetensors"))
    trainer = torch.load(out / "ckpt" / "trainer.pt", weights_only=True)
    timing = {"train_s", "steps_per_s", "audio_s_per_s", "elapsed_s"}
    log = [{k: v for k, v in json.loads(line).items() if k not in timing}
           for line in (out / "metrics.jsonl").read_text().splitlines()]
    return weights, trainer, log


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        same = torch.equal(a, b)
        assert same, f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resume_continues_exactly(tmp_path) -> None:
    """Stopped after step 1 and resumed, the codec trainer ends where the uninterrupted run ends: the same
    weights and EMA codebook statistics, optimizer moments, RNG states, and step for step the same losses
    (the same crops, speed changes, augmentations and quantizer dropout: the same data order)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train_tiny(straight)["step"] == 6
    assert _train_tiny(split, time_limit=0.0)["step"] == 1
    stopped, _, _ = _trained_state(split)
    assert _train_tiny(split, resume=True)["step"] == 6
    want, got = _trained_state(straight), _trained_state(split)

    codebook = [k for k in want[0] if k.startswith("quantizer.") and "_codebook." in k]
    assert {k.rsplit(".", 1)[1] for k in codebook} >= {"embed", "embed_avg", "cluster_size"}
    assert not all(torch.equal(stopped[k], want[0][k]) for k in codebook)  # steps 2..6 moved them
    _assert_same(got[0], want[0], "model.safetensors")
    assert got[1]["optimizer"]["state"] and got[1]["optimizer"]["state"][0]["step"] == 6
    _assert_same(got[1]["optimizer"], want[1]["optimizer"], "optimizer")
    _assert_same(got[1]["rng"], want[1]["rng"], "rng")
    assert [r["step"] for r in got[2]] == [1, 2, 3, 4, 5, 6]
    _assert_same(got[2], want[2], "metrics.jsonl")


def test_nearest_code_encode_matches_residual_vq_on_the_shipped_codec():
    """The fast encode path must give ResidualVQ's codes: the LM corpus was tokenized with the latter."""
    codec = load_codec(str(ROOT / "models" / "codec_rvq16k")).float().eval()
    wav, rate = load_audio(ARCTIC)
    assert rate == codec.sample_rate
    wav = wav[None, :, : wav.shape[-1] // codec.hop_length * codec.hop_length]  # [1, 1, T]
    with torch.no_grad():
        fast = codec.encode(wav).codes
        _, reference, _ = codec._quantize(codec.encoder(wav))
    assert fast.shape == reference.shape
    assert (fast == reference).float().mean().item() > 0.999
