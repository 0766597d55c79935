"""Exact phone timings from the synthesisers themselves: flite's segment relation and espeak-ng's phoneme
events, through their shared libraries (Debian's libflite1 and libespeak-ng1; ctypes, no build step).

Each call returns the waveform and an `Alignment` whose spans are what the engine actually did, not an
estimate: the ground truth the project trains and measures its aligner with. Neither library is
thread-safe, so each engine is serialised by its own lock (the two engines can still run side by side).
"""

from __future__ import annotations

import ctypes as C
import ctypes.util
import subprocess
import threading
from functools import cache

import numpy as np

from data_pipeline.alignment.phones import PAUSE, espeak_to_canonical, flite_to_canonical
from data_pipeline.alignment.schema import Alignment, PhoneSpan, WordSpan, fill_pauses, transcript_words

FLITE_ALIGNER = "flite-2.2 exact"
ESPEAK_ALIGNER = "espeak-ng exact"
_flite_lock = threading.Lock()
_espeak_lock = threading.Lock()


class EngineError(RuntimeError):
    """A synthesiser library is missing or failed on a text."""


def _load(names: list[str]) -> C.CDLL:
    for name in names:
        try:
            return C.CDLL(name, mode=C.RTLD_GLOBAL)
        except OSError:
            continue
    raise EngineError(f"cannot load {names[0]} (apt-get install -y flite espeak-ng)")


# ------------------------------------------------------------------------------------------------ flite
class _Wave(C.Structure):
    _fields_ = [("type", C.c_char_p), ("sample_rate", C.c_int), ("num_samples", C.c_int),
                ("num_channels", C.c_int), ("samples", C.POINTER(C.c_short))]


@cache
def _flite() -> C.CDLL:
    lib = _load(["libflite.so.1", ctypes.util.find_library("flite") or "libflite.so"])
    for dep in ("libflite_usenglish.so.1", "libflite_cmulex.so.1"):
        _load([dep])
    lib.flite_init()
    for fn, res, args in (
        ("flite_synth_text", C.c_void_p, [C.c_char_p, C.c_void_p]),
        ("utt_relation", C.c_void_p, [C.c_void_p, C.c_char_p]),
        ("relation_head", C.c_void_p, [C.c_void_p]),
        ("item_next", C.c_void_p, [C.c_void_p]),
        ("path_to_item", C.c_void_p, [C.c_void_p, C.c_char_p]),
        ("ffeature_string", C.c_char_p, [C.c_void_p, C.c_char_p]),
        ("ffeature_float", C.c_float, [C.c_void_p, C.c_char_p]),
        ("utt_wave", C.POINTER(_Wave), [C.c_void_p]),
        ("delete_utterance", None, [C.c_void_p]),
        ("feat_set_float", None, [C.c_void_p, C.c_char_p, C.c_float]),
    ):
        getattr(lib, fn).restype, getattr(lib, fn).argtypes = res, args
    return lib


@cache
def _flite_voice(name: str) -> int:
    lib = _flite()
    voice_lib = _load([f"libflite_cmu_us_{name}.so.1"])
    register = getattr(voice_lib, f"register_cmu_us_{name}")
    register.restype = C.c_void_p
    voice = register(None)
    if not voice:
        raise EngineError(f"flite voice {name!r} did not register")
    del lib
    return voice


def _voice_features(voice: int) -> int:
    # struct cst_voice_struct { const char *name; cst_features *features; ... }
    return C.cast(voice + C.sizeof(C.c_void_p), C.POINTER(C.c_void_p)).contents.value


def flite_synthesize(text: str, voice: str = "slt", stretch: float = 1.0,
                     f0_mean: float | None = None) -> tuple[np.ndarray, int, Alignment]:
    """flite reads normalised `text` -> (int16 samples, sample rate, exact alignment in seconds)."""
    words = transcript_words(text)
    with _flite_lock:  # the library's first load and registration too: neither is thread-safe
        lib = _flite()
        v = _flite_voice(voice)
        feats = _voice_features(v)
        lib.feat_set_float(feats, b"duration_stretch", C.c_float(stretch))
        if f0_mean is not None:
            lib.feat_set_float(feats, b"int_f0_target_mean", C.c_float(f0_mean))
        utt = lib.flite_synth_text(text.encode("utf-8"), v)
        if not utt:
            raise EngineError(f"flite ({voice}) failed on {text[:80]!r}")
        try:
            tokens, item = [], lib.relation_head(lib.utt_relation(utt, b"Token"))
            while item:
                tokens.append(item)
                item = lib.item_next(item)
            segs, item = [], lib.relation_head(lib.utt_relation(utt, b"Segment"))
            while item:
                name = lib.ffeature_string(item, b"name").decode()
                token = lib.path_to_item(item, b"R:SylStructure.parent.parent.R:Token.parent")
                segs.append((name, float(lib.ffeature_float(item, b"end")), token))
                item = lib.item_next(item)
            wave = lib.utt_wave(utt).contents
            samples = np.ctypeslib.as_array(wave.samples, shape=(wave.num_samples,)).copy()
            sample_rate = int(wave.sample_rate)
        finally:
            lib.delete_utterance(utt)
    spoken = [t for t in tokens if any(t == s[2] for s in segs)]
    if len(spoken) != len(words):
        raise EngineError(f"flite read {len(spoken)} words where the transcript has {len(words)}: "
                          f"{text[:80]!r}")
    token_index = {t: i for i, t in enumerate(spoken)}
    phones, start = [], 0.0
    for name, end, token in segs:
        word = -1 if name == PAUSE else token_index.get(token, -1)
        phones.extend(_split(flite_to_canonical(name), start, end, word))
        start = end
    duration = len(samples) / sample_rate
    return samples, sample_rate, _finish(words, phones, duration, FLITE_ALIGNER)


def _split(parts: tuple[str, ...], start: float, end: float, word: int) -> list[PhoneSpan]:
    """One engine phone -> its canonical phones, sharing its time equally. The shared boundaries are
    estimates, not engine timings: they are marked (`exact=False` on every part after the first)."""
    step = (end - start) / len(parts)
    return [PhoneSpan(part, start + k * step, start + (k + 1) * step, word, exact=k == 0)
            for k, part in enumerate(parts)]


def _finish(words: list[tuple[str, int, int]], phones: list[PhoneSpan], duration: float,
            aligner: str) -> Alignment:
    for p in phones:
        p.end = min(p.end, duration)  # flite's last segment may end a fraction of a sample late
    phones = fill_pauses([p for p in phones if p.start < duration], duration)
    spans: list[WordSpan] = []
    merged: list[int] = []  # words the engine spoke as part of a neighbour ("for a" -> one espeak word)
    for i, (word, _, _) in enumerate(words):
        mine = [p for p in phones if p.word_index == i]
        if mine:
            spans.append(WordSpan(word, mine[0].start, mine[-1].end))
        else:
            at = spans[-1].end if spans else 0.0
            spans.append(WordSpan(word, at, at))
            merged.append(i)
    if len(merged) == len(words) and words:
        raise EngineError("the engine spoke no phone of any word")
    extra = {"merged_words": merged} if merged else {}
    return Alignment(spans, phones, duration, frame_rate=0.0, aligner=aligner, extra=extra)


# --------------------------------------------------------------------------------------------- espeak-ng
class _EventId(C.Union):
    _fields_ = [("number", C.c_int), ("name", C.c_char_p), ("string", C.c_char * 8)]


class _Event(C.Structure):
    _fields_ = [("type", C.c_int), ("unique_identifier", C.c_uint), ("text_position", C.c_int),
                ("length", C.c_int), ("audio_position", C.c_int), ("sample", C.c_int),
                ("user_data", C.c_void_p), ("id", _EventId)]


_CALLBACK = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_short), C.c_int, C.POINTER(_Event))
_EV_END_OF_LIST, _EV_WORD, _EV_PHONEME = 0, 1, 7
_SYNCHRONOUS, _PHONEME_EVENTS, _PHONEME_IPA, _DONT_EXIT = 2, 0x1, 0x2, 0x8000
_RATE, _PITCH = 1, 3


class _EspeakState:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, str]] = []  # (type, sample, text_position, phoneme)


@cache
def _espeak() -> tuple[C.CDLL, int, _EspeakState, object]:
    lib = _load(["libespeak-ng.so.1", ctypes.util.find_library("espeak-ng") or "libespeak-ng.so"])
    sample_rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _PHONEME_EVENTS | _PHONEME_IPA | _DONT_EXIT)
    if sample_rate <= 0:
        raise EngineError("espeak-ng did not initialise (is espeak-ng-data installed?)")
    state = _EspeakState()

    def on_audio(wav, num_samples, events):  # noqa: ANN001 - C callback
        if num_samples > 0:
            state.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EV_END_OF_LIST:
            e = events[i]
            if e.type in (_EV_WORD, _EV_PHONEME):
                name = e.id.string.decode("utf-8", "replace") if e.type == _EV_PHONEME else ""
                state.events.append((e.type, e.sample, e.text_position, name))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)  # kept alive by the cache
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_SetVoiceByName.argtypes = [C.c_char_p]
    lib.espeak_Synth.argtypes = [C.c_char_p, C.c_size_t, C.c_uint, C.c_int, C.c_uint, C.c_uint,
                                 C.c_void_p, C.c_void_p]
    return lib, sample_rate, state, callback


@cache
def _espeak_languages() -> dict[str, str]:
    """Language code -> voice file, as the command line resolves `-v en-gb` (the library's
    SetVoiceByName knows only names and files)."""
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=30).stdout
    files: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and not cols[4].startswith("mb/"):
            files.setdefault(cols[1], cols[4])
    return files


def _espeak_voice_file(voice: str) -> str:
    """'en-gb+m3' -> 'gmw/en+m3' (a language code becomes its voice file; the variant stays)."""
    base, plus, variant = voice.partition("+")
    return _espeak_languages().get(base, base) + plus + variant


def espeak_synthesize(text: str, voice: str = "en-us", rate: int = 175,
                      pitch: int = 50) -> tuple[np.ndarray, int, Alignment]:
    """espeak-ng reads normalised `text` -> (int16 samples, sample rate, exact alignment in seconds).
    `rate` (words per minute) and `pitch` (0-99) are the command line's -s and -p."""
    words = transcript_words(text)
    data = text.encode("utf-8")
    with _espeak_lock:  # espeak_Initialize too: two threads initialising at once hang or lose events
        lib, sample_rate, state, _ = _espeak()
        state.chunks.clear()
        state.events.clear()
        if lib.espeak_SetVoiceByName(_espeak_voice_file(voice).encode()) != 0:
            raise EngineError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        if lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None) != 0:
            raise EngineError(f"espeak-ng ({voice}) failed on {text[:80]!r}")
        lib.espeak_Synchronize()
        samples = np.concatenate(state.chunks) if state.chunks else np.zeros(0, np.int16)
        events = list(state.events)
    duration = len(samples) / sample_rate
    # espeak's text positions count characters from 1.
    starts = [s for _, s, _ in words]
    ends = [e for _, _, e in words]

    def word_at(position: int) -> int:
        char = position - 1
        for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
            if s <= char < e:
                return i
        return -1

    phone_events = [(sample, word_at(pos), name) for kind, sample, pos, name in events if kind == _EV_PHONEME]
    phones: list[PhoneSpan] = []
    for k, (sample, word, name) in enumerate(phone_events):
        end_sample = phone_events[k + 1][0] if k + 1 < len(phone_events) else len(samples)
        start, end = sample / sample_rate, min(end_sample, len(samples)) / sample_rate
        parts = espeak_to_canonical(name)
        if parts == (PAUSE,):
            word = -1
        phones.extend(_split(parts, start, end, word))
    return samples, sample_rate, _finish(words, phones, duration, ESPEAK_ALIGNER)
