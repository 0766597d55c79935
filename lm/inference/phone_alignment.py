"""What a phone-aligned model (ModelConfig.alignment = "phoneme") is given at inference: the target text's
phones (flite's G2P with the corpus's pauses) and, in continuation mode, the phone of every prompt frame
(the forced aligner on the prompt and its transcript, at the codec's frame rate)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from data_pipeline.alignment.phones import PHONE_ID


def text_phone_ids(text: str) -> torch.Tensor:
    """Text -> [P] canonical phone ids, pauses included (data_pipeline.alignment.g2p.spoken_phones)."""
    from data_pipeline.alignment.g2p import spoken_phones

    return torch.tensor([PHONE_ID[p] for p in spoken_phones(text)], dtype=torch.long)


@lru_cache(maxsize=1)
def _aligner():  # noqa: ANN202 - loaded on the first continuation-mode request
    from data_pipeline.alignment.aligner import Aligner

    return Aligner.load()


def prompt_frame_phones(wav: np.ndarray | torch.Tensor, sample_rate: int, text: str,
                        num_frames: int) -> torch.Tensor:
    """The phone sounding at each of the prompt's `num_frames` codec frames, from the forced aligner.
    Raises data_pipeline.alignment.aligner.AlignmentError when the prompt does not fit its transcript."""
    alignment = _aligner().align(wav, sample_rate, text)
    return torch.from_numpy(alignment.frame_phone_ids(num_frames))
