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
from data_pipeline.alignment.schema import speakable_text, transcript_words
from data_pipeline.text.normalize import normalize_text

G2P_NAME = "flite-2.2 cmulex"


@dataclass(frozen=True)
class WordPhones:
    word: str
    phones: tuple[str, ...]
    pause_after: bool = False  # punctuation follows the word (a clause or sentence boundary)


class G2PError(ValueError):
    """A transcript with nothing to say, or a word flite gives no phones."""


@lru_cache(maxsize=4096)
def transcript_phones(text: str) -> tuple[WordPhones, ...]:
    """'Hello, 2 cats.' -> (WordPhones('Hello', ('hh','ax','l','ow')), WordPhones('two', ...), ...)."""
    spoken = speakable_text(normalize_text(text))
    words = transcript_words(spoken)
    if not words:
        raise G2PError(f"the transcript {text[:80]!r} has no words to say")
    _, _, alignment = flite_synthesize(spoken, "kal")
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
