"""Exact timings from the synthesiser libraries, the alignment schema, and the synthetic corpus sidecars."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from data_pipeline.alignment.engines import espeak_synthesize, flite_synthesize
from data_pipeline.alignment.phones import PAUSE, PHONE_ID, PHONES, espeak_to_canonical, flite_to_canonical
from data_pipeline.alignment.schema import Alignment, PhoneSpan, WordSpan, fill_pauses, transcript_words
from data_pipeline.corpus.synthetic_speech import SynthJob, build_synthetic_folder

TEXT = "Hello there, the quick brown fox."
WORDS = ["Hello", "there", "the", "quick", "brown", "fox"]


def _rms(samples: np.ndarray, sr: int, start: float, end: float) -> float:
    x = samples[int(start * sr): int(end * sr)].astype(np.float64) / 32768
    return float(np.sqrt((x ** 2).mean())) if len(x) else 0.0


@pytest.mark.parametrize("engine", ["flite", "espeak-ng"])
def test_engine_timings_tile_the_audio_and_follow_the_words(engine: str) -> None:
    if engine == "flite":
        samples, sr, a = flite_synthesize(TEXT, "slt", 1.0, 170)
    else:
        samples, sr, a = espeak_synthesize(TEXT, "en-us", 160, 50)
    assert [w.word for w in a.words] == WORDS
    assert a.duration == pytest.approx(len(samples) / sr)
    assert a.phones[0].start == 0 and a.phones[-1].end == pytest.approx(a.duration)
    assert all(p.end > p.start for p in a.phones)
    assert all(abs(p.start - q.end) < 1e-9 for q, p in zip(a.phones, a.phones[1:], strict=False))
    assert all(p.phone in PHONE_ID for p in a.phones)
    # words in order, each made of its own phones
    assert all(w.start < w.end for w in a.words)
    assert all(b.start >= a_.end - 1e-9 for a_, b in zip(a.words, a.words[1:], strict=False))
    assert [p.phone for p in a.phones if p.word_index == 5] in (["f", "aa", "k", "s"], ["f", "ao", "k", "s"])
    # the timings are real: the comma's pause is quieter than the words around it
    pause = max((p for p in a.phones[1:-1] if p.phone == PAUSE), key=lambda p: p.end - p.start)
    assert _rms(samples, sr, pause.start + 0.02, pause.end - 0.02) < 0.2 * _rms(samples, sr, *_span(a, 0))


def _span(a: Alignment, word: int) -> tuple[float, float]:
    return a.words[word].start, a.words[word].end


def test_speed_stretches_the_timings() -> None:
    _, _, slow = flite_synthesize(TEXT, "rms", 1.3)
    _, _, fast = flite_synthesize(TEXT, "rms", 0.8)
    assert slow.words[-1].end > 1.4 * fast.words[-1].end


def test_espeak_merged_words_are_marked() -> None:
    _, _, a = espeak_synthesize("He paid for a reward of three pounds", "en-us", 160, 50)
    assert len(a.words) == 8
    merged = a.extra.get("merged_words", [])
    assert all(a.words[i].start == a.words[i].end for i in merged)


def test_phone_maps() -> None:
    assert espeak_to_canonical("oʊ") == ("ow",) and espeak_to_canonical("əʊ") == ("ow",)
    assert espeak_to_canonical("ɛɹ") == ("eh", "r") and espeak_to_canonical("ˈiː") == ("iy",)
    assert espeak_to_canonical("") == (PAUSE,)
    assert flite_to_canonical("axr") == ("er",) and flite_to_canonical("dh") == ("dh",)
    with pytest.raises(ValueError, match="no canonical phone"):
        flite_to_canonical("xyz")
    assert PHONES[0] == "<none>" and len(set(PHONES)) == len(PHONES)


def test_frame_durations_sum_to_the_frames_and_give_every_phone_a_frame() -> None:
    phones = [PhoneSpan(PAUSE, 0, 0.1, -1), PhoneSpan("hh", 0.1, 0.105, 0), PhoneSpan("ay", 0.105, 0.3, 0),
              PhoneSpan(PAUSE, 0.3, 0.41, -1)]
    a = Alignment([WordSpan("hi", 0.1, 0.3)], phones, 0.41, 50.0, "test")
    for frames in (21, 20, 4):
        d = a.frame_durations(frames)
        assert d.sum() == frames and d.min() >= 1
    assert list(a.frame_durations(21)) == [5, 1, 9, 6]
    ids = a.frame_phone_ids(21)
    assert len(ids) == 21 and ids[5] == PHONE_ID["hh"] and ids[6] == PHONE_ID["ay"]
    assert a.frame_durations(2).sum() == 2  # fewer frames than phones still sums exactly
    round_trip = Alignment.from_json(json.loads(json.dumps(a.to_json())))
    assert round_trip == a


def test_shift_and_fill() -> None:
    phones = [PhoneSpan(PAUSE, 0, 0.3, -1), PhoneSpan("hh", 0.3, 0.4, 0), PhoneSpan("ay", 0.4, 0.6, 0),
              PhoneSpan(PAUSE, 0.6, 1.0, -1)]
    a = Alignment([WordSpan("hi", 0.3, 0.6)], phones, 1.0, 0.0, "test")
    b = a.shifted(0.35, 0.4)
    assert [(p.phone, round(p.start, 3), round(p.end, 3)) for p in b.phones] == [
        ("hh", 0.0, 0.05), ("ay", 0.05, 0.25), (PAUSE, 0.25, 0.4)]
    filled = fill_pauses([PhoneSpan("hh", 0.1, 0.2, 0)], 0.5)
    assert [p.phone for p in filled] == [PAUSE, "hh", PAUSE] and filled[-1].end == 0.5


def test_transcript_words_strip_edge_punctuation() -> None:
    words = transcript_words('"Well," he said -- it\'s well-known (really)!')
    assert [w for w, _, _ in words] == ["Well", "he", "said", "it's", "well-known", "really"]
    text = '"Well," he said'
    assert all(text[s:e] == w for w, s, e in transcript_words(text))


def test_corpus_builder_writes_exact_timing_sidecars(tmp_path) -> None:
    jobs = [SynthJob("f1", "flite", "slt", "The cat sat on the mat.", 1.0, 170.0, speaker="a"),
            SynthJob("e1", "espeak-ng", "en-gb+m3", "Two dogs ran home.", 160.0, 40.0, speaker="b")]
    n, _ = build_synthetic_folder(jobs, tmp_path, 16000, workers=2)
    assert n == 2
    for key, words in (("f1", 6), ("e1", 4)):
        info = sf.info(str(tmp_path / f"{key}.flac"))
        a = Alignment.from_json(json.loads((tmp_path / f"{key}.align.json").read_text()))
        assert len(a.words) == words
        assert a.duration == pytest.approx(info.duration, abs=1e-3)  # the timings follow the trimmed clip
        assert a.phones[-1].end == pytest.approx(info.duration, abs=1e-3)
        assert a.words[0].start < 0.2  # the builder trims leading silence to a 0.1 s margin
    # a clip whose sidecar is missing is made again (resume after a kill between the two writes)
    (tmp_path / "f1.align.json").unlink()
    build_synthetic_folder(jobs, tmp_path, 16000, workers=1)
    assert (tmp_path / "f1.align.json").is_file()
