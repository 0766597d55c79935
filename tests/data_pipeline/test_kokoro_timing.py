"""Kokoro symbols and the model's duration frames -> canonical phones that tile the clip
(data_pipeline/corpus/kokoro_timing.py); the real model run is in test_kokoro_voice.py."""

from __future__ import annotations

import pytest

from data_pipeline.corpus.kokoro_timing import LEAD_SECONDS, chunk_phones, kokoro_alignment


def test_stress_space_digraph_and_punctuation_frames_go_where_the_sound_is() -> None:
    # [start] h ɜ ɹ _ b ˈ I t , [end]: "her bite," with Kokoro's own letter I = ay
    symbols = "hɜɹ bˈIt,"
    frames = [4, 2, 3, 2, 3, 2, 1, 5, 2, 6, 1]
    phones = chunk_phones(symbols, frames)
    assert [p for p, *_ in phones] == ["pau", "hh", "er", "b", "ay", "t", "pau"]
    spans = {p: (s, e) for p, s, e, _ in phones}
    assert spans["hh"] == (4, 6)
    assert spans["er"] == (6, 6 + 3 + 2 + 2)  # ɜ + ɹ, plus the first half (2 of 3) of the space
    assert spans["b"] == (13, 13 + 1 + 2)  # the space's other frame, then b's own 2
    assert spans["ay"] == (16, 16 + 1 + 5)  # the stress mark's frame goes to the vowel after it
    assert spans["t"] == (22, 24)
    assert phones[-1][1:3] == (24, 24 + 6 + 1)  # the comma and the end symbol: one pause
    assert [w for *_, w in phones] == [-1, 0, 0, 1, 1, 1, -1]
    assert phones[-1][2] == sum(frames)


def test_a_linking_r_after_an_r_coloured_vowel_is_one_er() -> None:
    phones = chunk_phones("ʧəɹɹ ɪn", [0, 2, 3, 1, 1, 2, 2, 2, 0])
    assert [p for p, *_ in phones] == ["ch", "er", "ih", "n"]


def test_the_alignment_tiles_the_clip_and_leads_by_the_measured_offset() -> None:
    chunks = [("hɜɹ bˈIt,", [4, 2, 3, 2, 3, 2, 1, 5, 2, 6, 1]), ("nˈO.", [2, 3, 1, 6, 4, 3])]
    alignment = kokoro_alignment("Her bite, no.", chunks)
    frame = 600 / 24000
    assert alignment.duration == pytest.approx((31 + 19) * frame)
    assert alignment.phones[0].start == 0.0 and alignment.phones[-1].end == pytest.approx(alignment.duration)
    pairs = zip(alignment.phones, alignment.phones[1:], strict=False)
    assert all(a.end == pytest.approx(b.start) for a, b in pairs)
    hh = next(p for p in alignment.phones if p.phone == "hh")
    assert hh.start == pytest.approx(4 * frame - LEAD_SECONDS)
    assert [w.word for w in alignment.words] == ["Her", "bite", "no"] and "word_map" not in alignment.extra
    n = next(p for p in alignment.phones if p.phone == "n")
    assert n.word_index == 2 and n.start == pytest.approx((31 + 2) * frame - LEAD_SECONDS)
    # espeak-ng joined two words into one phoneme word: the map is marked approximate
    joined = kokoro_alignment("Her bite, no no.", chunks)
    assert "word_map" in joined.extra and len(joined.words) == 4


def test_durations_that_do_not_fit_the_symbols_are_refused() -> None:
    with pytest.raises(ValueError, match="durations for"):
        chunk_phones("hɜɹ", [1, 2, 3])
