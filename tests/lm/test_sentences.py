"""Sentence splitting for piece-by-piece synthesis of long text."""

import pytest

from lm.inference.sentences import split_sentences


def test_splits_at_sentence_ends_but_not_abbreviations_initials_or_decimals() -> None:
    text = ("Hello there, Mr. Smith. How are you today? I paid 3.50 dollars for it! "
            "J. R. Tolkien wrote that book.")
    assert split_sentences(text) == [
        "Hello there, Mr. Smith.",
        "How are you today?",
        "I paid 3.50 dollars for it!",
        "J. R. Tolkien wrote that book.",
    ]


def test_short_pieces_merge_with_a_neighbour() -> None:
    pieces = split_sentences("Yes. No. Maybe so, said the man who had waited by the door.")
    assert pieces == ["Yes. No. Maybe so, said the man who had waited by the door."]


def test_long_sentence_is_cut_at_clauses_then_spaces_and_nothing_is_lost() -> None:
    text = "one two three, four five six seven; eight nine ten eleven twelve thirteen fourteen fifteen"
    pieces = split_sentences(text, max_chars=40)
    assert all(len(p) <= 40 for p in pieces)
    assert pieces[0] == "one two three, four five six seven;"
    assert " ".join(pieces).split() == text.split()
    unbroken = split_sentences("x" * 120, max_chars=50)
    assert [len(p) for p in unbroken] == [50, 50, 20]


def test_quotes_cjk_whitespace_and_empty_text() -> None:
    assert split_sentences('He said "stop!" Then he left the room quietly.') == [
        'He said "stop!"', "Then he left the room quietly."
    ]
    cjk = split_sentences("今天天气很好。我们去公园散步吧！", min_chars=1)
    assert cjk == ["今天天气很好。", "我们去公园散步吧！"]
    assert split_sentences("  a  sentence \n over\tlines.  ") == ["a sentence over lines."]
    assert split_sentences(" \n ") == []
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences("text", max_chars=0)
