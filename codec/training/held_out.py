"""Held-out evaluation of a codec in training: round trips of clips it never trains on -> STOI and log-mel L1.

STOI needs the optional `pystoi` package; without it only the mel loss is reported.

Shape letters: B batch, T samples.
"""

from __future__ import annotations

import numpy as np
import torch

from codec.audio import pad_batch
from codec.backends.rvq_codec import RVQCodec
from codec.training.audio_pool import load_clips


def load_eval_clips(paths: list[str], sample_rate: int, max_clips: int) -> list[torch.Tensor]:
    clips = [c for p in paths for c in load_clips(p, sample_rate)]
    return clips[:max_clips]


def stoi_available() -> bool:
    try:
        import pystoi  # noqa: F401
    except ImportError:
        return False
    return True


@torch.no_grad()
def evaluate(model: RVQCodec, clips: list[torch.Tensor], mel_loss: torch.nn.Module,
             num_codebooks: int | None = None, batch_size: int = 8) -> dict[str, float]:
    """Round trip through the public Codec interface (encode -> decode) -> mean STOI and log-mel L1."""
    was_training = model.training
    model.eval()
    stois, mels = [], []
    sr = model.sample_rate
    for i in range(0, len(clips), batch_size):
        group = clips[i:i + batch_size]
        wav, lengths = pad_batch(group)
        enc = model.encode(wav, lengths)  # pad_batch of [T] clips -> [B, 1, T]
        codes = enc.codes[:, :num_codebooks] if num_codebooks else enc.codes
        out = model.decode(codes, enc.frame_lengths).cpu()
        for b, clip in enumerate(group):
            ref, hyp = clip.cpu(), out[b, 0, :clip.numel()]
            mels.append(float(mel_loss(hyp[None, None].to(model.device), ref[None, None].to(model.device))))
            if stoi_available():
                from pystoi import stoi
                stois.append(float(stoi(ref.numpy().astype(np.float64), hyp.numpy().astype(np.float64), sr)))
    model.train(was_training)
    result = {"eval_mel": float(np.mean(mels))}
    if stois:
        result["stoi"] = float(np.mean(stois))
    return result

