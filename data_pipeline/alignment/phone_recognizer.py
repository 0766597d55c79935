"""What phones a clip says, heard by hama's phoneme recogniser (PyPI `hama`, Apache-2.0, trained on real
speech), in the project's phone inventory (phones.py).

    recognise_phones(wav, 24000)  # -> ['dh', 'ax', 'k', 'w', 'ih', 'k', ...]

hama is multilingual and writes IPA with diacritics (aspiration, tie bars, r-colouring); they are dropped or
mapped to the nearest American phone, as espeak-ng's names are. A symbol with no English counterpart
becomes UNKNOWN, which matches no phone (an error, not a silent drop).
"""

from __future__ import annotations

import numpy as np
import torch

from codec.audio import resample
from data_pipeline.alignment.features import SAMPLE_RATE, _hama_model
from data_pipeline.alignment.phones import PAUSE, UnknownPhoneError, espeak_to_canonical

UNKNOWN = "?"
# hama symbols espeak-ng does not write, before its names are looked up
_HAMA = {"ɝ": "ɚ", "ɻ": "ɹ", "ɨ": "ɪ", "y": "u", "ʁ": "ɹ", "ɣ": "g", "β": "v", "c": "k", "ɟ": "g"}
_MARKS = str.maketrans("", "", "͡ʰʱ͈ʷˀ˞̥̩̯̚")


def hama_to_canonical(symbol: str) -> tuple[str, ...]:
    """One hama IPA symbol -> canonical phones (pauses dropped: () for one), (UNKNOWN,) for a foreign one."""
    plain = _HAMA.get(symbol, symbol).translate(_MARKS)
    plain = _HAMA.get(plain, plain)
    if not plain or plain in (",", "%", "‿"):
        return ()
    try:
        return tuple(p for p in espeak_to_canonical(plain) if p != PAUSE)
    except UnknownPhoneError:
        return (UNKNOWN,)


def recognise_phones(wav: np.ndarray | torch.Tensor, sample_rate: int) -> list[str]:
    """Mono audio [T] at `sample_rate` -> the spoken phones hama hears (no pauses)."""
    audio = torch.as_tensor(np.asarray(wav, dtype=np.float32)).reshape(-1)
    audio16k = resample(audio[None], sample_rate, SAMPLE_RATE)[0].numpy()
    if audio16k.size < SAMPLE_RATE // 10:  # under 0.1 s: nothing a recogniser can hear
        return []
    heard = _hama_model().transcribe_waveform(np.ascontiguousarray(audio16k), SAMPLE_RATE)
    return [p for symbol in heard.phonemes for p in hama_to_canonical(symbol)]
