"""What a phone-aligned model (ModelConfig.alignment = "phoneme") is given at inference: the target text's
phones (flite's G2P with the corpus's pauses), optionally how many frames to hold each (flite's durations at
the prompt speaker's pace), and, in continuation mode, the phone of every prompt frame (the forced aligner on
the prompt and its transcript, at the codec's frame rate)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from data_pipeline.alignment.phones import NONE_ID, PAUSE, PAUSE_ID, PHONE_ID


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


def text_phone_frames(text: str, frame_rate: float, seconds_per_phone: float | None = None,
                      max_frames: int = 32, speed: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Text -> ([P] phone ids as `text_phone_ids`, [P] frames to hold each): flite kal's durations
    (data_pipeline.alignment.g2p.spoken_phone_seconds), its phones and clause pauses scaled to
    `seconds_per_phone` / `speed` on average (None: kal's own pace), at least 1 and at most `max_frames`
    frames each."""
    from data_pipeline.alignment.g2p import spoken_phone_seconds

    timed = spoken_phone_seconds(text)
    spoken = [sec for phone, sec in timed if phone != PAUSE]
    natural = sum(spoken) / len(spoken)
    scale = (natural if seconds_per_phone is None else seconds_per_phone) / natural / speed
    seconds = np.array([sec * (scale if phone != PAUSE or 0 < i < len(timed) - 1 else 1.0)
                        for i, (phone, sec) in enumerate(timed)])
    bounds = np.round(np.cumsum(seconds) * frame_rate).astype(np.int64)  # rounding never drifts
    frames = np.clip(np.diff(bounds, prepend=0), 1, max_frames)
    ids = torch.tensor([PHONE_ID[phone] for phone, _ in timed], dtype=torch.long)
    return ids, torch.from_numpy(frames)


def prompt_seconds_per_phone(prompt_phones: torch.Tensor, prompt_text: str,
                             frame_rate: float) -> float | None:
    """The prompt speaker's pace: seconds of its aligned frames that hold a phone (not a pause) per phone of
    its transcript (None when the alignment holds no speech)."""
    from data_pipeline.alignment.g2p import transcript_phones

    speech_frames = int(((prompt_phones != PAUSE_ID) & (prompt_phones != NONE_ID)).sum())
    phones = sum(len(w.phones) for w in transcript_phones(prompt_text))
    return speech_frames / frame_rate / phones if speech_frames and phones else None


def spoken_span_frames(frame_phones: torch.Tensor) -> int:
    """Frames from the first to the last one that holds a spoken phone (pauses inside counted, leading and
    trailing silence not): how long a reading takes, as a listener times it. 0 when none is spoken."""
    spoken = ((frame_phones != PAUSE_ID) & (frame_phones != NONE_ID)).nonzero().flatten()
    return int(spoken[-1] - spoken[0] + 1) if spoken.numel() else 0


def text_phones(text: str) -> list[str]:
    """The spoken phones of `text` (flite's CMU lexicon G2P, no pauses); [] when it has none."""
    from data_pipeline.alignment.g2p import G2PError, transcript_phones

    try:
        return [p for word in transcript_phones(text) for p in word.phones]
    except G2PError:
        return []


def reading_pace(frame_phones: torch.Tensor, text: str, frame_rate: float) -> float | None:
    """Seconds per phone of a reading of `text` whose frames held `frame_phones` [F], timed over its
    spoken span (`spoken_span_frames`; evaluation/pace.py times generated audio the same way, by loudness);
    None when nothing is spoken or `text` has no phones."""
    phones = len(text_phones(text))
    span = spoken_span_frames(frame_phones)
    return span / frame_rate / phones if span and phones else None
