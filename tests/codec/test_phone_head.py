"""The phonetic first level (codec/training/frame_labels.py, `train_codec.py --phone-data --phone-loss`):
frame-exact labelled crops (also through a speed change), a phone head whose gradient reaches the encoder
through the quantizer, and a real run that learns to name the phones and resumes with its head."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.audio import load_audio
from codec.backends.rvq_codec import RVQCodec
from codec.training.frame_labels import FrameLabelPool, PhoneHead, phone_loss
from data_pipeline.alignment.schema import Alignment, PhoneSpan, WordSpan
from tests.codec.test_codec_init_from import ARCTIC_DIR, _tiny_config, main


def test_crops_start_on_frames_and_keep_their_labels() -> None:
    hop = 4
    # every sample holds its frame's global index, so a crop's audio says which frames it came from
    clips = [(torch.arange(n).repeat_interleave(hop).float() + off, torch.arange(n) + off)
             for n, off in ((30, 0), (25, 30))]
    clips[1] = (clips[1][0][:-3], clips[1][1])  # a clip a little short of its frames is zero-padded
    pool = FrameLabelPool(clips, hop, torch.device("cpu"))
    assert pool.frames == 55 and pool.audio.numel() == 55 * hop
    gen = torch.Generator().manual_seed(0)
    wav, labels = pool.sample(16, 10, gen)
    assert wav.shape == (16, 1, 11 * hop) and labels.shape == (16, 10)
    frame_of_audio = wav[:, 0, ::hop][:, :10].long()
    padded = frame_of_audio == 0  # the padding of clip 2's last frame reads 0
    assert torch.equal(frame_of_audio[~padded], labels[~padded])
    assert (torch.diff(labels, dim=1) == 1).all()
    # played 1.5x faster: output frame t is labelled with source frame floor((t + 0.5) * 1.5)
    wav, labels = pool.sample(8, 10, gen, speed=1.5)
    assert wav.shape[-1] == (15 + 1) * hop
    starts = wav[:, 0, 0].long()
    expected = starts[:, None] + ((torch.arange(10) + 0.5) * 1.5).long()[None, :]
    assert torch.equal(labels, expected)


def test_the_head_reads_the_chosen_code_and_trains_the_encoder() -> None:
    torch.manual_seed(0)
    codec = RVQCodec(_tiny_config()).train()
    head = PhoneHead(codec.config.dimension, 5)
    wav = torch.randn(2, 1, 3200) * 0.1
    out = codec(wav)
    codebook = codec.quantizer.codebooks[0]
    logits = head(codebook, out.latents, out.codes[:, 0])
    chosen = codebook[out.codes[:, 0]]
    # the value is the code vector's (what a token carries), not the unquantised latent's
    assert torch.allclose(logits, head.proj(chosen), atol=1e-5)
    labels = torch.randint(0, 5, logits.shape[:2])
    loss, acc = phone_loss(logits, labels)
    assert 0.0 <= float(acc) <= 1.0
    loss.backward()
    encoder_grad = sum(p.grad.abs().sum() for p in codec.encoder.parameters() if p.grad is not None)
    assert float(encoder_grad) > 0
    assert all(p.grad is None for p in codec.decoder.parameters())


def _energy_labelled_folder(folder: Path) -> Path:
    """Real clips whose sidecars say `aa` where the frame is loud and `pau` elsewhere (a label the level-1
    codes can carry), written as the corpus's .align.json."""
    folder.mkdir()
    for clip in sorted(ARCTIC_DIR.glob("*.wav"))[:3]:
        shutil.copy(clip, folder / clip.name)
        wav, sr = load_audio(clip)
        frame = sr // 50
        rms = wav[0, : wav.shape[-1] // frame * frame].reshape(-1, frame).pow(2).mean(-1).sqrt().numpy()
        loud = rms > np.median(rms)
        phones, start = [], 0
        for i in range(1, len(loud) + 1):
            if i == len(loud) or loud[i] != loud[start]:
                phones.append(PhoneSpan("aa" if loud[start] else "pau", start / 50, i / 50,
                                        0 if loud[start] else -1))
                start = i
        align = Alignment([WordSpan("a", 0.0, len(loud) / 50)], phones, len(loud) / 50, 0.0, "test energy")
        (folder / f"{clip.stem}.align.json").write_text(json.dumps(align.to_json()))
    (folder / "orphan.align.json").write_text(json.dumps(align.to_json()))  # no audio beside it: skipped
    return folder


def test_a_phone_run_learns_the_labels_and_resumes_with_its_head(tmp_path) -> None:
    torch.manual_seed(0)
    source = tmp_path / "src"
    RVQCodec(_tiny_config()).save_pretrained(source, dtype=torch.float32)
    labelled = _energy_labelled_folder(tmp_path / "labelled")
    args = ["--data", str(ARCTIC_DIR), "--init-from", str(source), "--out", str(tmp_path / "run"),
            "--phone-data", str(labelled), "--phone-loss", "1.0", "--phone-share", "0.5",
            "--batch-size", "4", "--segment-seconds", "0.4", "--lr", "3e-3", "--warmup-steps", "1",
            "--log-every", "1", "--eval-every", "1000", "--ckpt-every", "1000", "--device", "cpu"]
    assert main([*args, "--max-steps", "300"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    phone = [r["phone"] for r in log if "phone" in r]
    acc = [r["phone_acc"] for r in log if "phone_acc" in r]
    assert len(phone) == 300
    assert np.mean(phone[-10:]) < np.mean(phone[:5]) - 0.3  # ln(42) = 3.74 at the start
    assert np.mean(acc[-20:]) > 0.6
    assert (tmp_path / "run" / "ckpt" / "phone_head.safetensors").is_file()
    assert main([*args, "--max-steps", "302", "--resume"]) == 0
    state = json.loads((tmp_path / "run" / "ckpt" / "state.json").read_text())
    assert state["step"] == 302

    # a run started without the head cannot silently grow a fresh one on resume
    plain = [a for a in args if a not in ("--phone-data", str(labelled), "--phone-loss", "1.0")]
    plain[plain.index(str(tmp_path / "run"))] = str(tmp_path / "plain")
    assert main([*plain, "--max-steps", "1"]) == 0
    with pytest.raises(FileNotFoundError, match="phone_head"):
        main([*[a if a != str(tmp_path / "run") else str(tmp_path / "plain") for a in args], "--max-steps",
              "2", "--resume"])


def test_phone_data_and_phone_loss_go_together(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["--data", str(ARCTIC_DIR), "--out", str(tmp_path / "r"), "--phone-loss", "0.5"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no readable clip"):
        main(["--data", str(ARCTIC_DIR), "--out", str(tmp_path / "r"), "--phone-data", str(empty),
              "--phone-loss", "0.5", "--codec-config", str(_tiny_json(tmp_path))])


def _tiny_json(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(_tiny_config().to_dict()))
    return path
