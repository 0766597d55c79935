"""WER arithmetic on known strings (no model)."""

import pytest

from evaluation.asr import TextNormalizer, WordErrors, text_word_errors, word_errors


def test_identical_words_have_no_errors():
    we = word_errors("the cat sat".split(), "the cat sat".split())
    assert we == WordErrors(substitutions=0, deletions=0, insertions=0, ref_words=3)
    assert we.wer == 0.0


@pytest.mark.parametrize("hyp, subs, dels, ins", [
    ("the dog sat", 1, 0, 0),
    ("the sat", 0, 1, 0),
    ("the cat sat down", 0, 0, 1),
    ("", 0, 3, 0),
    ("a b c d e", 3, 0, 2),
])
def test_edit_operations(hyp, subs, dels, ins):
    we = word_errors("the cat sat".split(), hyp.split())
    assert (we.substitutions, we.deletions, we.insertions) == (subs, dels, ins)
    assert we.wer == pytest.approx((subs + dels + ins) / 3)


def test_wer_can_exceed_one_with_insertions():
    assert word_errors(["yes"], "no no no".split()).wer == pytest.approx(3.0)


def test_empty_reference():
    assert word_errors([], []).wer == 0.0
    assert word_errors([], ["hello"]).wer == 1.0


def test_normaliser_ignores_case_punctuation_and_spelling():
    norm = TextNormalizer()
    assert text_word_errors("Hello, World!", "hello world", norm).wer == 0.0
    assert text_word_errors("Mr. Smith colour", "Mister Smith color", norm).wer == 0.0
    assert text_word_errors("twenty two apples", "22 apples.", norm).wer == 0.0
    we = text_word_errors("Author of the danger trail, Philip Steels, etc.",
                          "Author of the danger trail, fill up steels, etc.", norm)
    # "philip" -> "fill up": one substitution and one insertion over 8 reference words.
    assert (we.errors, we.ref_words) == (2, 8)


def test_bracketed_words_of_the_reference_are_kept():
    # Whisper's normaliser drops "(...)" as a non-speech annotation; in a script those words are spoken.
    norm = TextNormalizer()
    ref = "But the first Bible actually dated (which also was printed at Maintz) in fourteen sixty-two"
    hyp = "but the first bible actually dated which also was printed at mainz in 1462"
    we = text_word_errors(ref, hyp, norm)
    assert (we.errors, we.ref_words) == (1, 14)  # Maintz/mainz; 1462 matches "fourteen sixty-two"
    assert text_word_errors("hello", "hello (music)", norm).wer == 0.0  # a hypothesis annotation is dropped
