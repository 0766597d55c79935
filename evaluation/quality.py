"""Signal quality: DNSMOS (no reference; ONNX models in the `speechmos` wheel), PESQ-WB and STOI (reference).

All three work at 16 kHz; inputs at other rates are resampled here.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from evaluation.audio import resample

log = logging.getLogger(__name__)

QUALITY_SAMPLE_RATE = 16000


class DNSMOS:
    """Microsoft DNSMOS P.835 (SIG / BAK / OVRL) + P.808 MOS; the ONNX sessions are created once."""

    def __init__(self) -> None:
        import speechmos.dnsmos as sd

        root = os.path.dirname(os.path.abspath(sd.__file__))
        self._model = sd.DNSMOS(
            os.path.join(root, "dnsmos_models", "sig_bak_ovr.onnx"),
            os.path.join(root, "dnsmos_models", "model_v8.onnx"),
        )

    @staticmethod
    def describe() -> dict:
        return {"model": "DNSMOS P.835 sig_bak_ovr.onnx + P.808 model_v8.onnx (speechmos)",
                "personalized": False}

    def __call__(self, wav: np.ndarray, sample_rate: int) -> dict[str, float]:
        """Mono [T] -> {'ovrl', 'sig', 'bak', 'p808'} on the 1..5 MOS scale."""
        audio = np.clip(resample(wav, sample_rate, QUALITY_SAMPLE_RATE), -1.0, 1.0)
        if len(audio) < QUALITY_SAMPLE_RATE // 10:
            raise ValueError("audio shorter than 0.1 s; DNSMOS needs speech")
        out = self._model(audio, QUALITY_SAMPLE_RATE, False)
        return {"ovrl": float(out["ovrl_mos"]), "sig": float(out["sig_mos"]),
                "bak": float(out["bak_mos"]), "p808": float(out["p808_mos"])}


def _aligned(ref: np.ndarray, ref_rate: int, deg: np.ndarray, deg_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Both at 16 kHz, cut to the shorter one (a codec pads its output to whole frames)."""
    ref = resample(ref, ref_rate, QUALITY_SAMPLE_RATE)
    deg = resample(deg, deg_rate, QUALITY_SAMPLE_RATE)
    n = min(len(ref), len(deg))
    return ref[:n].astype(np.float64), deg[:n].astype(np.float64)


def pesq_wb(ref: np.ndarray, ref_rate: int, deg: np.ndarray, deg_rate: int) -> float:
    """ITU-T P.862.2 wideband PESQ (MOS-LQO, about 1.0..4.64) of `deg` against the clean `ref`."""
    from pesq import pesq

    r, d = _aligned(ref, ref_rate, deg, deg_rate)
    return float(pesq(QUALITY_SAMPLE_RATE, r, d, "wb"))


def stoi(ref: np.ndarray, ref_rate: int, deg: np.ndarray, deg_rate: int) -> float:
    """Short-time objective intelligibility (0..1) of `deg` against the clean `ref`."""
    from pystoi import stoi as _stoi

    r, d = _aligned(ref, ref_rate, deg, deg_rate)
    return float(_stoi(r, d, QUALITY_SAMPLE_RATE, extended=False))
