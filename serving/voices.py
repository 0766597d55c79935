"""`VoiceStore`: the server's voices. A voice prompt is encoded once and its codes are cached on disk, so a
saved voice survives a restart without being encoded again; built-in voices come from the repo's bundled
speech clips (tests/data/speech, public domain / CMU ARCTIC licence, see its MANIFEST.tsv).

On disk, one folder a voice: `voice.json` (id, name, transcript, ...), `prompt.flac` (the clip, mono at the
codec's rate, so the voice can be encoded again) and `codes.safetensors` (the codes, stamped with a
fingerprint of the codec that made them: a server started with another codec encodes the clip again instead
of using codes that mean nothing to it).

The codes cover the whole clip. Speaker-prompt mode (no transcript) uses its last `max_prompt_seconds`, as
`Synthesizer.synthesize` does; continuation mode (a transcript) uses all of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from codec.audio import AudioReadError, load_audio, resample, to_mono
from codec.base import Codec
from lm.inference.export_dir import REPO_ROOT
from lm.inference.prompt_transcript import PromptTranscriber, TranscriberUnavailable, auto_prompt_text
from lm.inference.synthesis_types import SynthesisError, Voice
from lm.inference.synthesizer import Synthesizer

log = logging.getLogger(__name__)

SPEECH_DIR = REPO_ROOT / "tests" / "data" / "speech"
_LJ = "Public domain (LJ Speech 1.1, LibriVox recording)"
_ARCTIC = "CMU ARCTIC licence (free use with attribution, festvox.org/cmu_arctic)"
# id -> (name, clip under SPEECH_DIR, licence); speaker-prompt voices (no transcript)
BUILTIN_VOICES: dict[str, tuple[str, str, str]] = {
    "lj": ("LJ (female, US English)", "ljspeech-sample/LJ001-0004.wav", _LJ),
    "arctic-aew": ("ARCTIC aew (male, US English)", "cmu-arctic-sample/cmu_arctic_us_aew_a0001.wav", _ARCTIC),
    "arctic-axb": ("ARCTIC axb (female, US English)", "cmu-arctic-sample/cmu_arctic_us_axb_a0004.wav",
                   _ARCTIC),
    "librivox": ("LibriVox reader (English)",
                 "librivox-sense-sensibility/sense_and_sensibility_01_austen_64kb-0880.wav",
                 "Public domain (LibriVox recording)"),
}
VOICE_FILE, AUDIO_FILE, CODES_FILE = "voice.json", "prompt.flac", "codes.safetensors"
MAX_NAME_CHARS, MAX_TEXT_CHARS = 100, 1000


class VoiceError(ValueError):
    """An upload that cannot become a voice: `code` names the reason for the JSON error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class StoredVoice:
    id: str
    name: str
    builtin: bool
    audio: np.ndarray  # [T] mono float32 at the codec's rate
    codes: torch.Tensor  # [Q, Fp] of the whole clip
    text: str | None = None  # transcript: continuation mode by default
    license: str | None = None
    created: float = field(default_factory=time.time)
    _phones: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _house: str | None = field(default=None, repr=False)  # the nearest house voice, once asked for

    def info(self, sample_rate: int) -> dict:
        return {"id": self.id, "name": self.name, "builtin": self.builtin,
                "seconds": round(len(self.audio) / sample_rate, 3), "text": self.text,
                "license": self.license, "created": int(self.created)}


def codec_fingerprint(codec: Codec) -> str:
    """Identifies a codec's architecture and weights: cached codes are only valid for the same one."""
    digest = hashlib.sha256(json.dumps({"backend": codec.backend_name, "config": codec.config_dict(),
                                        "codebooks": codec.num_codebooks}, sort_keys=True,
                                       default=str).encode())
    for name, tensor in sorted(codec.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class VoiceStore:
    """Voices by id: built-ins (read-only) and saved ones (in `directory`, None: kept in memory only)."""

    def __init__(self, synth: Synthesizer, directory: Path | None, min_seconds: float = 1.0,
                 max_seconds: float = 30.0, builtins: dict[str, tuple[str, str, str]] | None = None,
                 transcriber: PromptTranscriber | None = None) -> None:
        self.synth, self.directory = synth, directory
        # uploads without a transcript get Whisper's (continuation mode reads better), as generate.py does
        self.transcriber = transcriber
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self._builtins = BUILTIN_VOICES if builtins is None else builtins
        self._voices: dict[str, StoredVoice] = {}
        self._lock = threading.Lock()
        self._fingerprint = codec_fingerprint(synth.codec)

    # ---- startup ------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Encode the built-in voices and load the saved ones (re-encoding those made with another codec)."""
        for voice_id, (name, clip, licence) in self._builtins.items():
            path = SPEECH_DIR / clip
            if not path.is_file():
                log.warning("built-in voice %s: %s is missing; skipped", voice_id, path)
                continue
            wav, rate = load_audio(path)
            audio = self._at_codec_rate(wav, rate)
            self._voices[voice_id] = StoredVoice(voice_id, name, True, audio, self._encode(audio),
                                                 license=licence)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for folder in sorted(p for p in self.directory.iterdir() if (p / VOICE_FILE).is_file()):
            try:
                voice = self._read(folder)
            except (OSError, ValueError, KeyError, AudioReadError) as e:
                log.warning("saved voice %s is unreadable (%s); skipped", folder, e)
                continue
            self._voices[voice.id] = voice
        log.info("voices: %d built-in, %d saved in %s", sum(v.builtin for v in self._voices.values()),
                 sum(not v.builtin for v in self._voices.values()), self.directory)

    def _read(self, folder: Path) -> StoredVoice:
        meta = json.loads((folder / VOICE_FILE).read_text())
        audio, rate = sf.read(folder / AUDIO_FILE, dtype="float32")
        if rate != self.synth.sample_rate:
            audio = self._at_codec_rate(torch.from_numpy(audio)[None], rate)
        with safe_open(str(folder / CODES_FILE), framework="pt") as f:
            codes, made_by = f.get_tensor("codes"), (f.metadata() or {}).get("codec")
        if made_by != self._fingerprint:
            log.info("voice %s was encoded by another codec: encoding it again", meta["id"])
            codes = self._encode(audio)
            self._write_codes(folder, codes)
        return StoredVoice(meta["id"], meta["name"], False, audio, codes, meta.get("text"),
                           created=meta.get("created", time.time()))

    # ---- the API ------------------------------------------------------------------------------------------
    def list(self) -> list[StoredVoice]:
        with self._lock:
            return sorted(self._voices.values(), key=lambda v: (not v.builtin, v.created, v.id))

    def get(self, voice_id: str) -> StoredVoice | None:
        with self._lock:
            return self._voices.get(voice_id)

    def add(self, data: bytes, name: str | None = None, text: str | None = None,
            filename: str | None = None) -> StoredVoice:
        """An uploaded clip -> a saved voice. Raises VoiceError for what is not usable audio."""
        label = filename or "upload"
        try:
            info = sf.info(io.BytesIO(data))
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as e:
            raise VoiceError("not_audio", f"{label} is not an audio file soundfile can read "
                                          f"(wav, flac, ogg, mp3, ...): {e}") from e
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if seconds < self.min_seconds:
            raise VoiceError("audio_too_short", f"{label} is {seconds:.2f} s long; a voice needs at least "
                                                f"{self.min_seconds:g} s (3-10 s works best)")
        if seconds > self.max_seconds:
            raise VoiceError("audio_too_long", f"{label} is {seconds:.1f} s long; a voice takes at most "
                                               f"{self.max_seconds:g} s (3-10 s works best): cut it")
        try:
            wav, rate = load_audio(data, name=label)
        except AudioReadError as e:
            raise VoiceError("not_audio", str(e)) from e
        audio = self._at_codec_rate(wav, rate)
        if not np.isfinite(audio).all():
            raise VoiceError("not_audio", f"{label} holds NaN or infinite samples")
        text = (text or "").strip()[:MAX_TEXT_CHARS] or None
        if text is None and self.transcriber is not None:
            text = self._transcribe(audio, label)
        voice_id = f"v-{uuid.uuid4().hex[:12]}"
        name = (name or "").strip()[:MAX_NAME_CHARS] or Path(label).stem[:MAX_NAME_CHARS] or voice_id
        voice = StoredVoice(voice_id, name, False, audio, self._encode(audio), text)
        if self.directory is not None:
            self._save(voice)
        with self._lock:
            self._voices[voice_id] = voice
        return voice

    def _transcribe(self, audio: np.ndarray, label: str) -> str | None:
        try:
            text = auto_prompt_text(self.synth, self.transcriber, audio, self.synth.sample_rate)
        except TranscriberUnavailable as e:
            log.warning("%s: uploads without a transcript stay in speaker-prompt mode", e)
            self.transcriber = None
            return None
        log.info("voice upload %s transcribed as %r", label, text)
        return text[:MAX_TEXT_CHARS] if text else None

    def delete(self, voice_id: str) -> bool:
        """False when there is no such saved voice; built-in voices cannot be deleted (VoiceError)."""
        with self._lock:
            voice = self._voices.get(voice_id)
            if voice is None:
                return False
            if voice.builtin:
                raise VoiceError("builtin_voice", f"voice {voice_id!r} is built in and cannot be deleted")
            del self._voices[voice_id]
        if self.directory is not None:
            shutil.rmtree(self.directory / voice_id, ignore_errors=True)
        return True

    def prompt(self, voice: StoredVoice, prompt_text: str | None = None) -> Voice:
        """What to synthesise with: the voice's transcript (or `prompt_text`; "" for none) decides the mode.
        A phone-aligned model's continuation mode also needs the phone of each prompt frame (the aligner,
        once per voice and transcript)."""
        text = voice.text if prompt_text is None else prompt_text.strip()
        if self.synth.house_voices is not None and voice._house is None:  # once per voice, not per request
            voice._house = self.synth.nearest_house_voice(voice.codes)
        if not text:
            frames = math.ceil(self.synth.defaults.max_prompt_seconds * self.synth.codec.frame_rate)
            return Voice(voice.codes[:, -frames:], house_voice=voice._house)
        phones = None
        if self.synth.phone_aligned:
            phones = voice._phones.get(text)
            if phones is None:
                phones = self._align(voice, text)
                voice._phones[text] = phones
        return Voice(voice.codes, text, phones, voice._house)

    # ---- helpers ------------------------------------------------------------------------------------------
    def _align(self, voice: StoredVoice, text: str) -> torch.Tensor:
        from data_pipeline.alignment.aligner import AlignmentError
        from lm.inference.phone_alignment import prompt_frame_phones

        try:
            return prompt_frame_phones(voice.audio, self.synth.sample_rate, text, voice.codes.shape[-1])
        except AlignmentError as e:
            raise SynthesisError(f"voice {voice.id!r}: the clip does not fit the transcript {text!r} ({e}); "
                                 "give the right prompt_text, or \"\" for speaker-prompt mode") from e

    def _at_codec_rate(self, wav: torch.Tensor, rate: int) -> np.ndarray:
        return resample(to_mono(wav.float()), rate, self.synth.sample_rate)[0].numpy()

    def _encode(self, audio: np.ndarray) -> torch.Tensor:
        # the whole clip: speaker-prompt mode trims at request time (`prompt`), continuation uses all of it
        limit = len(audio) / self.synth.sample_rate + 1.0
        return self.synth.encode_voice(audio, self.synth.sample_rate, max_prompt_seconds=limit).codes

    def _save(self, voice: StoredVoice) -> None:
        """Written into a temporary folder and renamed: a crash never leaves half a voice behind."""
        tmp = self.directory / f".{voice.id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        sf.write(tmp / AUDIO_FILE, voice.audio, self.synth.sample_rate, subtype="PCM_24")
        self._write_codes(tmp, voice.codes)
        meta = {"id": voice.id, "name": voice.name, "text": voice.text, "created": voice.created}
        (tmp / VOICE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        tmp.rename(self.directory / voice.id)

    def _write_codes(self, folder: Path, codes: torch.Tensor) -> None:
        save_file({"codes": codes.contiguous()}, str(folder / CODES_FILE),
                  metadata={"codec": self._fingerprint})
