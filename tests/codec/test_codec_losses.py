"""The codec's optional STOI loss (1 - differentiable STOI) on a real clip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pystoi import stoi

from codec import load_audio
from codec.training.losses import CodecLoss, CodecLossWeights, NegStoiLoss

ROOT = Path(__file__).resolve().parents[2]
ARCTIC = ROOT / "tests" / "data" / "speech" / "cmu-arctic-sample" / "cmu_arctic_us_axb_a0005.wav"  # 16 kHz


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, sr = load_audio(ARCTIC)
    assert sr == 16_000
    return wav[None, :, :16000]  # [1, 1, T]: 1 s


def noisy(wav: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(wav.shape, generator=torch.Generator().manual_seed(seed))
    scale = wav.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt() * 10 ** (-snr_db / 20)
    return wav + scale * noise


def test_neg_stoi_tracks_pystoi_and_ranks_degradations(speech) -> None:
    loss = NegStoiLoss(16_000)
    ref = speech[0, 0].double().numpy()
    for snr in (-5.0, 5.0):
        deg = noisy(speech, snr)
        measured = stoi(ref, deg[0, 0].double().numpy(), 16_000, extended=False)
        # torch_stoi approximates pystoi (its VAD is soft and framing differs a little): close, not equal
        assert loss(deg, speech).item() == pytest.approx(1.0 - measured, abs=0.08)
    assert loss(noisy(speech, -5.0), speech).item() > loss(noisy(speech, 5.0), speech).item()
    assert loss(speech, speech).item() == pytest.approx(0.0, abs=0.02)


def test_codec_loss_adds_the_optional_terms_and_they_carry_gradient(speech) -> None:
    batch = speech.repeat(2, 1, 1)
    pred = noisy(batch, 10).requires_grad_(True)
    commit = torch.tensor(0.0)
    plain, plain_parts = CodecLoss(16_000)(pred, batch, commit)
    weights = CodecLossWeights(stoi=2.0)
    total, parts = CodecLoss(16_000, weights)(pred, batch, commit)
    assert set(parts) - set(plain_parts) == {"neg_stoi"}
    expected = plain + 2.0 * parts["neg_stoi"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(total - plain, pred)  # the STOI term's share alone reaches pred
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_train_script_logs_the_stoi_term(tmp_path) -> None:
    import importlib.util
    import json

    from codec.backends.rvq_codec import RVQCodecConfig

    spec = importlib.util.spec_from_file_location("script_train_codec", ROOT / "scripts" / "train_codec.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # scripts/ is not a package
    config = tmp_path / "tiny.json"
    tiny = RVQCodecConfig(architecture="spectral", dimension=16, spectral_dim=32, encoder_layers=1,
                          decoder_layers=2, num_codebooks=4, codebook_size=64, kmeans_iters=2,
                          threshold_ema_dead_code=0.0)
    config.write_text(json.dumps(tiny.to_dict()))
    out = tmp_path / "run"
    assert script.main(["--data", str(ARCTIC.parent), "--out", str(out), "--batch-size", "2",
                        "--segment-seconds", "0.6", "--codec-config", str(config), "--log-every", "2",
                        "--max-steps", "2", "--device", "cpu", "--stoi-loss", "3"]) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in logged if "neg_stoi" in r]
    assert trained and 0.0 < trained[0]["neg_stoi"] < 2.0
    # the STOI term is part of the logged total
    assert trained[0]["loss"] > trained[0]["mel"] + 3 * trained[0]["neg_stoi"] - 1e-4


def test_shipped_v3_codec_beats_v1_on_real_speech() -> None:
    """Regression guard on the published weights: v3's gain over v1 shows on a real clip of each source
    (CMU ARCTIC, LibriVox, LJ Speech; none trained on), decoding the 4 levels the LM predicts. Measured when
    published: v1 0.715 / 0.884 / 0.706, v3 0.881 / 0.911 / 0.832."""
    from codec import load_codec, resample, to_mono

    speech = ROOT / "tests" / "data" / "speech"
    clips = [ARCTIC, speech / "librivox-sense-sensibility" / "sense_and_sensibility_01_austen_64kb-0870.wav",
             speech / "ljspeech-sample" / "LJ001-0002.wav"]
    scores = {}
    for name in ("codec_rvq16k", "codec_rvq16k_v3"):
        codec = load_codec(str(ROOT / "models" / name)).float().eval()
        scores[name] = []
        for path in clips:
            wav, rate = load_audio(path)
            wav = resample(to_mono(wav), rate, codec.sample_rate)[None]  # [1, 1, T]
            with torch.no_grad():
                out = codec.decode(codec.encode(wav).codes[:, :4])[0, 0, : wav.shape[-1]]
            scores[name].append(stoi(wav[0, 0].double().numpy(), out.double().numpy(), codec.sample_rate))
    v1, v3 = scores["codec_rvq16k"], scores["codec_rvq16k_v3"]
    assert all(b > a + 0.02 for a, b in zip(v1, v3, strict=True)), scores
    assert sum(v3) / len(v3) > 0.85, scores
