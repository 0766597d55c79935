"""The one phone inventory every alignment uses: CMU/ARPAbet (flite's US phone set) plus a pause.

Both synthesisers and the aligner speak it: flite's segments are ARPAbet already, espeak-ng's phoneme
events (IPA names) are mapped here, and the G2P of a transcript (data_pipeline/alignment/g2p.py) is
flite's CMU lexicon + letter-to-sound rules. One coarse, American inventory keeps the phones an LM sees
at training time (from the engine that spoke) close to the ones it is given at inference (from the G2P):
espeak-ng's accent variants ("əʊ", "oʊ", "o") all become `ow`.
"""

from __future__ import annotations

NONE = "<none>"  # a frame with no phone (speaker-prompt frames, padding); id 0
PAUSE = "pau"
PHONES: tuple[str, ...] = (
    NONE, PAUSE,
    "aa", "ae", "ah", "ao", "aw", "ax", "ay", "b", "ch", "d", "dh", "eh", "er", "ey", "f", "g", "hh", "ih",
    "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", "t", "th", "uh", "uw", "v", "w",
    "y", "z", "zh",
)
PHONE_ID: dict[str, int] = {p: i for i, p in enumerate(PHONES)}
NONE_ID, PAUSE_ID = PHONE_ID[NONE], PHONE_ID[PAUSE]

# flite's rarer segments onto the core set.
_FLITE = {"axr": ("er",), "el": ("ax", "l"), "em": ("ax", "m"), "en": ("ax", "n"), "nx": ("n",),
          "dx": ("d",), "h#": (PAUSE,), "ssil": (PAUSE,)}

# espeak-ng English phoneme names (as its IPA phoneme events spell them) -> canonical phones. A name that is
# not here is split greedily into the longest names that are (stress and length marks dropped first).
_ESPEAK: dict[str, tuple[str, ...]] = {
    "": (PAUSE,), "_": (PAUSE,), " ": (PAUSE,),
    "p": ("p",), "b": ("b",), "t": ("t",), "d": ("d",), "k": ("k",), "g": ("g",), "ɡ": ("g",),
    "f": ("f",), "v": ("v",), "θ": ("th",), "ð": ("dh",), "s": ("s",), "z": ("z",), "ʃ": ("sh",),
    "ʒ": ("zh",), "h": ("hh",), "x": ("k",), "ç": ("hh",), "m": ("m",), "n": ("n",), "ŋ": ("ng",),
    "l": ("l",), "ɫ": ("l",), "ɹ": ("r",), "r": ("r",), "ɾ": ("t",), "w": ("w",), "ʍ": ("w",), "j": ("y",),
    "tʃ": ("ch",), "dʒ": ("jh",), "ʔ": ("t",), "n̩": ("ax", "n"), "l̩": ("ax", "l"), "m̩": ("ax", "m"),
    "ə": ("ax",), "ɐ": ("ah",), "ᵻ": ("ih",), "ɚ": ("er",), "ɜ": ("er",), "æ": ("ae",), "a": ("ae",),
    "ɑ": ("aa",), "ɒ": ("aa",), "ɔ": ("ao",), "ʌ": ("ah",), "ɛ": ("eh",), "e": ("eh",), "ɪ": ("ih",),
    "i": ("iy",), "ʊ": ("uh",), "u": ("uw",), "o": ("ow",), "ɵ": ("uh",), "ʉ": ("uw",), "ɯ": ("uw",),
    "eɪ": ("ey",), "aɪ": ("ay",), "ɑɪ": ("ay",), "aʊ": ("aw",), "oʊ": ("ow",), "əʊ": ("ow",),
    "ɔɪ": ("oy",), "ɛɹ": ("eh", "r"), "ɪɹ": ("ih", "r"), "ʊɹ": ("uh", "r"), "ɑɹ": ("aa", "r"),
    "ɔɹ": ("ao", "r"), "oɹ": ("ao", "r"), "aɪɚ": ("ay", "er"), "aɪə": ("ay", "ax"), "aʊɚ": ("aw", "er"),
    "aʊə": ("aw", "ax"), "eə": ("eh", "ax"), "ɛə": ("eh", "ax"), "ɪə": ("ih", "ax"), "iə": ("iy", "ax"),
    "ʊə": ("uh", "ax"), "ɔə": ("ao", "ax"), "əl": ("ax", "l"), "ju": ("y", "uw"),
}
_DROPPED_MARKS = str.maketrans("", "", "ˈˌːˑ̃̆ʲ-:̪̩̥")
_MAX_NAME = max(len(k) for k in _ESPEAK)


class UnknownPhoneError(ValueError):
    """A synthesiser phone name this module cannot map."""


def flite_to_canonical(name: str) -> tuple[str, ...]:
    """A flite segment name -> canonical phones ('axr' -> ('er',))."""
    if name in PHONE_ID and name != NONE:
        return (name,)
    if name in _FLITE:
        return _FLITE[name]
    raise UnknownPhoneError(f"flite segment {name!r} has no canonical phone")


def espeak_to_canonical(name: str) -> tuple[str, ...]:
    """An espeak-ng IPA phoneme name -> canonical phones ('ɛɹ' -> ('eh', 'r'), 'oʊ' -> ('ow',))."""
    if name in _ESPEAK:
        return _ESPEAK[name]
    plain = name.translate(_DROPPED_MARKS)
    if plain in _ESPEAK:
        return _ESPEAK[plain]
    out: list[str] = []
    i = 0
    while i < len(plain):
        for size in range(min(_MAX_NAME, len(plain) - i), 0, -1):
            if plain[i:i + size] in _ESPEAK:
                out.extend(_ESPEAK[plain[i:i + size]])
                i += size
                break
        else:
            raise UnknownPhoneError(f"espeak-ng phoneme {name!r} has no canonical phone (at {plain[i]!r})")
    return tuple(p for p in out if p != PAUSE) or (PAUSE,)
