"""Transcript -> words -> canonical phones, with flite's CMU lexicon and letter-to-sound rules.

flite's own front end (through libflite, data_pipeline/alignment/engines.py) is the G2P: the flite part of
the corpus is then labelled with exactly the phones this returns, and every other clip with the nearest
canonical phones. Texts are normalised first (numbers, abbreviations:
data_pipeline.text.normalize.normalize_text).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from data_pipeline.alignment.engines import flite_synthesize
from data_pipeline.alignment.phones import PAUSE
from data_pipeline.alignment.schema import Alignment, speakable_text, transcript_words
from data_pipeline.text.normalize import normalize_text

G2P_NAME = "flite-2.2 cmulex"


@dataclass(frozen=True)
class WordPhones:
    word: str
    phones: tuple[str, ...]
    pause_after: bool = False  # punctuation follows the word (a clause or sentence boundary)


class G2PError(ValueError):
    """A transcript with nothing to say, or a word flite gives no phones."""


# Seconds of silence the corpus clips keep at each end, and the shortest pause a clause boundary gets when
# flite reads straight through it: the frame budgets `spoken_phone_seconds` hands a phone-aligned model.
EDGE_PAUSE_SECONDS = 0.1
MIN_CLAUSE_PAUSE_SECONDS = 0.1


@lru_cache(maxsize=4096)
def _kal_reading(text: str) -> tuple[str, list[tuple[str, int, int]], Alignment]:
    """`text` -> (normalised, its words, flite kal's exact alignment of them)."""
    spoken = speakable_text(normalize_text(text))
    words = transcript_words(spoken)
    if not words:
        raise G2PError(f"the transcript {text[:80]!r} has no words to say")
    return spoken, words, flite_synthesize(spoken, "kal")[2]


@lru_cache(maxsize=4096)
def transcript_phones(text: str) -> tuple[WordPhones, ...]:
    """'Hello, 2 cats.' -> (WordPhones('Hello', ('hh','ax','l','ow')), WordPhones('two', ...), ...)."""
    spoken, words, alignment = _kal_reading(text)
    out = []
    for i, (word, _, end) in enumerate(words):
        phones = tuple(p.phone for p in alignment.phones if p.word_index == i and p.phone != PAUSE)
        if not phones:
            raise G2PError(f"no pronunciation for word {word!r} of {text[:80]!r}")
        out.append(WordPhones(word, phones, pause_after=spoken[end:end + 1] in tuple(",.;:!?")))
    return tuple(out)


def spoken_phones(text: str) -> list[str]:
    """The phone sequence a TTS model speaks for `text`: a pause first and last (the corpus clips keep 0.1 s
    of silence at each end) and after every word that punctuation follows (where the synthesisers of the
    training corpus pause), the words' phones in between."""
    phones = [PAUSE]
    for w in transcript_phones(text):
        phones += w.phones
        if w.pause_after:
            phones.append(PAUSE)
    if phones[-1] != PAUSE:
        phones.append(PAUSE)
    return phones


def spoken_phone_seconds(text: str) -> list[tuple[str, float]]:
    """`spoken_phones(text)` with a length each: flite kal's own duration for every phone (its CART duration
    model, the one the flite part of the corpus was read with), the silence flite leaves at a clause boundary
    (at least MIN_CLAUSE_PAUSE_SECONDS) and EDGE_PAUSE_SECONDS at both ends."""
    _, words, alignment = _kal_reading(text)
    spans = [[p for p in alignment.phones if p.word_index == i and p.phone != PAUSE]
             for i in range(len(words))]
    out = [(PAUSE, EDGE_PAUSE_SECONDS)]
    for i, w in enumerate(transcript_phones(text)):
        out += [(p.phone, p.end - p.start) for p in spans[i]]
        if w.pause_after and i + 1 < len(words):
            after, before = spans[i][-1].end, spans[i + 1][0].start
            gap = sum(p.end - p.start for p in alignment.phones
                      if p.phone == PAUSE and p.start >= after - 1e-6 and p.end <= before + 1e-6)
            out.append((PAUSE, max(gap, MIN_CLAUSE_PAUSE_SECONDS)))
    out.append((PAUSE, EDGE_PAUSE_SECONDS))
    return out
