"""House voices: the AR draws codebook 1 in a training voice near the prompt; the NAR adds the prompt's voice.

Why: the AR was trained on a dozen synthetic voices and has not learned the first-level codes of a real voice
(recording channel, room, microphone). Teacher-forced on 44 real clips it gives the true codebook-1 code
7.85 nats a frame (worse than a uniform guess over 1,024 codes, 6.93) against 1.72 on its own voices, so
whatever it draws for a real prompt reads badly. Prompted by a house voice instead it draws codes it knows;
the NAR, prompted by the user's clip, then fills codebooks 2..Q in the user's voice. Measured on 32 real
clips (scripts/diagnose_stages.py's pairing, step 4,200): WER 61.7 % -> 30.0 %, DNSMOS 2.05 -> 2.54, speaker
similarity to the prompt 0.643 -> 0.657 (README, "Round 10: house voices").

The bank lives in an export directory as `house_voices.safetensors`: per voice `<name>.codes` [Q, F] (a
few seconds of one of its training clips) and `<name>.embedding` [256] (resemblyzer, of those codes
decoded by the model's codec). `scripts/make_house_voices.py` writes it; `nearest` picks by the cosine of the
prompt's embedding (the prompt's codes decoded the same way, so both sides went through the codec).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from codec.base import Codec

log = logging.getLogger(__name__)

HOUSE_VOICES_FILE = "house_voices.safetensors"


@dataclass
class HouseVoice:
    name: str
    codes: torch.Tensor  # [Q, F] long
    embedding: torch.Tensor  # [256] float32, L2-normed
    # a whole utterance with its transcript and the phone of every frame: the AR continues it (continuation
    # mode); None: the codes are a crop the AR reads as a speaker prompt
    text: str | None = None
    phones: torch.Tensor | None = None  # [F] long


class HouseVoices:
    """An ordered bank of house voices; the first is the fallback when no speaker encoder is installed."""

    def __init__(self, voices: list[HouseVoice]) -> None:
        if not voices:
            raise ValueError("a house voice bank needs at least one voice")
        names = [v.name for v in voices]
        if len(set(names)) != len(names):
            raise ValueError(f"house voice names repeat: {names}")
        self.voices = voices
        self._encoder = None

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.voices]

    def get(self, name: str) -> HouseVoice:
        for v in self.voices:
            if v.name == name:
                return v
        raise KeyError(f"no house voice {name!r}; this model has {self.names}")

    # ---- files --------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / HOUSE_VOICES_FILE
        tensors = {}
        texts = {}
        for v in self.voices:
            tensors[f"{v.name}.codes"] = v.codes.to(torch.int64).contiguous()
            tensors[f"{v.name}.embedding"] = v.embedding.to(torch.float32).contiguous()
            if v.text is not None:
                if v.phones is None or v.phones.shape != v.codes.shape[1:]:
                    raise ValueError(f"house voice {v.name!r}: a transcript needs the phone of every frame")
                tensors[f"{v.name}.phones"] = v.phones.to(torch.int64).contiguous()
                texts[v.name] = v.text
        save_file(tensors, str(path), metadata={"order": json.dumps(self.names), "texts": json.dumps(texts)})
        return path

    @classmethod
    def load(cls, directory: str | Path) -> HouseVoices | None:
        """The bank of an export directory, or None when it has none."""
        path = Path(directory) / HOUSE_VOICES_FILE
        if not path.is_file():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            order, texts = json.loads(meta.get("order", "[]")), json.loads(meta.get("texts", "{}"))
            tensors = load_file(str(path))
            voices = [HouseVoice(n, tensors[f"{n}.codes"].long(), tensors[f"{n}.embedding"].float(),
                                 texts.get(n), tensors[f"{n}.phones"].long() if n in texts else None)
                      for n in order]
            return cls(voices)
        except (OSError, KeyError, ValueError, SafetensorError) as e:
            raise ValueError(f"{path}: not a house voice bank ({e})") from e

    # ---- choice -------------------------------------------------------------------------------------------
    def nearest(self, wav: np.ndarray, sample_rate: int) -> HouseVoice:
        """The voice whose embedding is closest to `wav` (mono [T]); the first voice when resemblyzer is not
        installed or the audio cannot be embedded (silence)."""
        encoder = self._speaker_encoder()
        if encoder is None:
            return self.voices[0]
        try:
            emb = torch.from_numpy(np.asarray(encoder.embed(wav, sample_rate), dtype=np.float32))
        except ValueError as e:
            log.warning("house voice: cannot embed the prompt (%s); using %s", e, self.voices[0].name)
            return self.voices[0]
        scores = torch.stack([v.embedding for v in self.voices]) @ emb
        return self.voices[int(scores.argmax())]

    def nearest_to_codes(self, codes: torch.Tensor, codec: Codec, max_seconds: float = 10.0) -> HouseVoice:
        """`nearest` for a prompt given as codes [Q, Fp]: decoded by `codec` (its last `max_seconds`), as the
        house voices' embeddings were taken."""
        frames = int(max_seconds * codec.frame_rate)
        with torch.inference_mode():
            wav = codec.decode(codes[:, -frames:][None].to(codec.device))[0, 0]
        return self.nearest(wav.float().cpu().numpy(), codec.sample_rate)

    def _speaker_encoder(self):
        if self._encoder is None:
            try:
                from lm.inference.speaker_embedding import SpeakerEncoder

                self._encoder = SpeakerEncoder()
            except ImportError:
                log.warning("house voice: resemblyzer is not installed (pip install '.[eval]'); every prompt "
                            "gets the first house voice, %s", self.voices[0].name)
                self._encoder = False
        return self._encoder or None
