"""Split long text into sentence-sized pieces for piece-by-piece synthesis.

An AR TTS model is trained on utterances of a few seconds; asking it for a paragraph in one go runs past the
lengths it has seen (and past the length guard). The synthesizer therefore splits at sentence boundaries and
generates each piece with the same voice prompt. Pieces that are too short to be spoken well on their own
("Yes.") are merged into a neighbour; pieces that are too long are cut at clause punctuation, then at spaces.
"""

from __future__ import annotations

import re

# Words that end with a period without ending the sentence (lower-case, without the final period).
ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e", "cf",
        "no", "vol", "fig", "ch", "sec", "gen", "col", "lt", "sgt", "capt", "gov", "rev", "hon", "inc",
        "ltd", "co", "corp", "dept", "approx", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
        "sept", "oct", "nov", "dec", "a.m", "p.m", "u.s", "u.k",
    }
)

# A sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace or end of text.
# CJK full-width terminators end a sentence without any following space.
_END = re.compile(r"""([.!?…]+["'”’)\]]*)(\s+|$)|([。！？]+["'”’」』)\]]*)\s*""")
_CLAUSE = re.compile(r"[,;:—–]\s+|\s+-\s+|[，；：、]")
_SPACE = re.compile(r"\s+")
_CJK_END = frozenset("。！？」』")


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the '.' at index `dot` ends an abbreviation or an initial ("J. R. R. Tolkien")."""
    start = dot
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "\"'“‘([":
        start -= 1
    word = text[start:dot].lower()
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _sentence_spans(text: str) -> list[str]:
    pieces, start = [], 0
    for match in _END.finditer(text):
        if match.group(1) is not None:
            punct = match.group(1)
            if punct.startswith(".") and len(punct.rstrip("\"'”’)]")) == 1 and match.group(2):
                if _is_abbreviation(text, match.start(1)):
                    continue
            end = match.end(1)
        else:
            end = match.end(3)
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def _cut_long(piece: str, max_chars: int) -> list[str]:
    """Cut a piece longer than `max_chars` at the last clause mark (else space) that keeps it under."""
    out = []
    while len(piece) > max_chars:
        window = piece[: max_chars + 1]
        cuts = [m.end() for m in _CLAUSE.finditer(window) if m.end() > max_chars // 3]
        if not cuts:
            cuts = [m.start() for m in _SPACE.finditer(window) if m.start() > 0]
        cut = cuts[-1] if cuts else max_chars
        out.append(piece[:cut].strip())
        piece = piece[cut:].strip()
    if piece:
        out.append(piece)
    return out


def _merge_short(pieces: list[str], min_chars: int, max_chars: int) -> list[str]:
    merged: list[str] = []
    for piece in pieces:
        if merged and (len(merged[-1]) < min_chars or len(piece) < min_chars) and (
            len(merged[-1]) + 1 + len(piece) <= max_chars
        ):
            sep = "" if merged[-1][-1] in _CJK_END else " "
            merged[-1] = f"{merged[-1]}{sep}{piece}"
        else:
            merged.append(piece)
    return merged


def split_sentences(text: str, max_chars: int = 200, min_chars: int = 12) -> list[str]:
    """Split `text` into pieces of at most `max_chars` characters at sentence boundaries.

    Whitespace is collapsed; pieces shorter than `min_chars` are merged with a neighbour when the result still
    fits in `max_chars`. Returns [] for text with no visible characters.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    text = _SPACE.sub(" ", text).strip()
    if not text:
        return []
    pieces = [cut for piece in _sentence_spans(text) for cut in _cut_long(piece, max_chars)]
    return _merge_short(pieces, min_chars, max_chars)
