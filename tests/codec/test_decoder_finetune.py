"""Decoder-only GAN fine-tuning of an RVQCodec: the STFT discriminator and its losses, the frozen-codes
contract (an LM corpus tokenized before the fine-tune stays valid), export and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codec import load_audio, load_codec
from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
from codec.training.decoder_finetune import DecoderFinetuneConfig, finetune_decoder
from codec.training.discriminator import (
    MultiResolutionSTFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"
ARCTIC_DIR = SPEECH / "cmu-arctic-sample"
EVAL_CLIP = SPEECH / "librivox-sense-sensibility"


def test_discriminator_shapes_and_losses():
    torch.manual_seed(0)
    disc = MultiResolutionSTFTDiscriminator(n_ffts=(256, 128), channels=4)
    wav = torch.randn(2, 1, 4000)
    logits, features = disc(wav)
    assert len(logits) == len(features) == 2
    assert all(lg.shape[0] == 2 and lg.shape[1] == 1 for lg in logits)
    zeros = [torch.zeros(2, 1, 5, 5)]
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2.0)
    assert discriminator_loss([torch.full((1,), 2.0)], [torch.full((1,), -2.0)]).item() == 0.0
    assert generator_adversarial_loss(zeros).item() == pytest.approx(1.0)
    assert feature_matching_loss(features, features).item() == 0.0
    _, other = disc(wav * 0.5)
    assert feature_matching_loss(features, other).item() > 0.1


@pytest.fixture(scope="module")
def tiny_codec_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = RVQCodecConfig(architecture="spectral", dimension=16, spectral_dim=32, encoder_layers=1,
                            decoder_layers=2, num_codebooks=4, codebook_size=64, kmeans_init=False,
                            threshold_ema_dead_code=0.0)
    directory = tmp_path_factory.mktemp("codec") / "tiny"
    RVQCodec(config).save_pretrained(directory, dtype=torch.float32)
    return directory


def _config(codec_dir: Path, out: Path, max_steps: int) -> DecoderFinetuneConfig:
    return DecoderFinetuneConfig(codec=str(codec_dir), data=[str(ARCTIC_DIR)], out=str(out),
                                 eval_data=[str(EVAL_CLIP)], eval_max_clips=1, max_steps=max_steps,
                                 batch_size=2, segment_seconds=0.4, lr=1e-3, disc_lr=1e-3, warmup_steps=1,
                                 disc_warmup_steps=2, codebook_choices=(2, 4), disc_channels=4,
                                 disc_n_ffts=(256, 128), log_every=2, eval_every=3, ckpt_every=3,
                                 device="cpu")


def test_only_the_decoder_changes_and_the_codes_stay_the_same(tiny_codec_dir, tmp_path):
    result = finetune_decoder(_config(tiny_codec_dir, tmp_path / "run", max_steps=6))
    assert result["step"] == 6
    before = load_codec(str(tiny_codec_dir))
    after = load_codec(str(tmp_path / "run" / "export"))
    old, new = before.state_dict(), after.state_dict()
    changed = {k for k in old if not torch.equal(old[k].float(), new[k].float())}
    assert changed and all(k.startswith("decoder.") for k in changed)
    wav, _ = load_audio(ARCTIC_DIR / "cmu_arctic_us_axb_a0005.wav")
    assert torch.equal(before.encode(wav[None]).codes, after.encode(wav[None]).codes)

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "mel_q4" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]  # the curve starts before any update
    assert {"mel_q2", "stoi_q2", "stoi_q4"} <= set(evals[-1])
    logs = [r for r in records if "d_loss" in r]
    assert "adv" not in logs[0] and {"adv", "fm", "mel"} <= set(logs[-1])  # D warms up alone


def test_resume_continues_exactly(tiny_codec_dir, tmp_path):
    finetune_decoder(_config(tiny_codec_dir, tmp_path / "straight", max_steps=6))
    finetune_decoder(_config(tiny_codec_dir, tmp_path / "split", max_steps=3))
    finetune_decoder(_config(tiny_codec_dir, tmp_path / "split", max_steps=6), resume=True)
    for name in ("codec.safetensors", "discriminator.safetensors"):
        from safetensors.torch import load_file

        a = load_file(str(tmp_path / "straight" / "ckpt" / name))
        b = load_file(str(tmp_path / "split" / "ckpt" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_rejects_a_codec_that_is_not_an_rvq_codec(tmp_path):
    with pytest.raises(TypeError, match="needs an RVQCodec"):
        finetune_decoder(DecoderFinetuneConfig(codec="encodec_24khz:random", data=[str(ARCTIC_DIR)],
                                               out=str(tmp_path), device="cpu"))


def test_zero_gan_weights_train_the_decoder_on_spectral_losses_alone(tiny_codec_dir, tmp_path):
    cfg = _config(tiny_codec_dir, tmp_path / "run", max_steps=2)
    cfg.adv_weight = cfg.fm_weight = 0.0
    finetune_decoder(cfg)
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in logs if "mel" in r]
    assert trained and trained[0]["step"] == 2 and trained[0]["lr"] > 0  # no discriminator warm-up
    assert not any("d_loss" in r or "adv" in r for r in logs)


def test_stoi_weight_adds_the_stoi_term_and_keeps_the_codes(tiny_codec_dir, tmp_path):
    cfg = _config(tiny_codec_dir, tmp_path / "short", max_steps=2)
    cfg.adv_weight = cfg.fm_weight = 0.0
    cfg.stoi_weight = 5.0
    cfg.segment_seconds = 0.4
    with pytest.raises(ValueError, match="at least 0.5 s"):  # too short for one STOI envelope segment
        finetune_decoder(cfg)
    cfg.segment_seconds, cfg.out = 0.6, str(tmp_path / "run")
    finetune_decoder(cfg)
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in logs if "mel" in r]
    assert trained and 0.0 < trained[0]["neg_stoi"] <= 2.0  # 1 - STOI of an untrained decoder: well above 0
    source = load_codec(tiny_codec_dir).state_dict()
    tuned = load_codec(tmp_path / "run" / "export").state_dict()
    assert all(torch.equal(v, tuned[k]) for k, v in source.items() if not k.startswith("decoder."))
    assert any(not torch.equal(v, tuned[k]) for k, v in source.items() if k.startswith("decoder."))
