"""English normalisation of transcripts: numbers, symbols and abbreviations written out as they are said.

``normalize_text`` writes out what a speaker says for numbers, currency, percentages, ordinals, years, times,
units and common abbreviations, and unifies unicode variants (NFKC, quotes, dashes), so the tokenizer and the
model never have to learn that "$5" is read "five dollars". Case and punctuation are kept: they carry prosody.
"""

from __future__ import annotations

import re
import unicodedata

# ----------------------------------------------------------------------------------------------- numbers

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = "_ thousand million billion trillion quadrillion quintillion".split()
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def spell_digits(digits: str) -> str:
    """'007' -> 'zero zero seven'."""
    return " ".join(_ONES[int(d)] for d in digits)


def number_to_words(n: int) -> str:
    """Cardinal in American English: 1234 -> 'one thousand two hundred thirty-four'."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    if n >= 1000 ** len(_SCALES):
        return spell_digits(str(n))
    words, scale = [], 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            words.append(number_to_words(group) + (f" {_SCALES[scale]}" if scale else ""))
        scale += 1
    return " ".join(reversed(words))


def ordinal_words(n: int) -> str:
    """21 -> 'twenty-first'."""
    words = number_to_words(n)
    head, sep, last = max(words.rpartition(" "), words.rpartition("-"), key=lambda p: len(p[0]))
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year_to_words(year: int) -> str:
    """1984 -> 'nineteen eighty-four', 1905 -> 'nineteen oh five', 2007 -> 'two thousand seven'."""
    if 2000 <= year <= 2009 or year % 1000 == 0:
        return number_to_words(year)
    high, low = divmod(year, 100)
    if low == 0:
        return f"{number_to_words(high)} hundred"
    if low < 10:
        return f"{number_to_words(high)} oh {number_to_words(low)}"
    return f"{number_to_words(high)} {number_to_words(low)}"


def _is_year(digits: str) -> bool:
    return len(digits) == 4 and 1100 <= int(digits) <= 2099


def _plural(words: str) -> str:
    """'ninety' -> 'nineties', 'nineteen hundred' -> 'nineteen hundreds'."""
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _cardinal(digits: str) -> str:
    digits = digits.replace(",", "")
    if len(digits) > 1 and digits.startswith("0"):  # "007", "0800": read digit by digit
        return spell_digits(digits)
    return number_to_words(int(digits))


def _decimal(number: str) -> str:
    whole, _, frac = number.replace(",", "").partition(".")
    head = _cardinal(whole) if whole else ""
    return (head + " point " + spell_digits(frac)).strip() if frac else head


# ----------------------------------------------------------------------------------------------- rules

_NUM = r"\d+(?:,\d{3})*"  # 12 or 1,234,567
_NUM_DEC = rf"(?:{_NUM}(?:\.\d+)?|\.\d+)"
_CURRENCIES = {  # symbol -> (singular, plural, sub-unit singular, sub-unit plural)
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "", ""),
    "₹": ("rupee", "rupees", "paisa", "paise"),
}
_SCALE_WORDS = "thousand|million|billion|trillion"
_CURRENCY_RE = re.compile(
    rf"([$£€¥₹])\s?({_NUM_DEC})(?:\s?({_SCALE_WORDS}|[kKmMbB]n?)\b)?|({_NUM_DEC})\s?([€£$])(?!\w)"
)
_SCALE_ABBREV = {"k": "thousand", "m": "million", "mn": "million", "b": "billion", "bn": "billion"}
_PERCENT_RE = re.compile(rf"({_NUM_DEC})\s?(%|percent\b|per cent\b)")
_DEGREE_RE = re.compile(rf"(-?{_NUM_DEC})\s?°(?:\s?([CF])\b)?")
# "5 p.m." -> "5 p m"; the final dot stays when it may end the sentence.
_AMPM_RE = re.compile(r"(?<=\d)\s?([AaPp])\.?[Mm]\b(?:\.(?=\s+[a-z]|\s*[,;:!?]))?")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?=(\s[ap] m\b)?)")
_ORDINAL_RE = re.compile(rf"\b({_NUM})(?i:st|nd|rd|th)\b")
_DECADE_RE = re.compile(r"(?:\b|')(\d{2}|\d{4})'?s\b")
_RANGE_RE = re.compile(rf"({_NUM_DEC}(?:\s?%)?)\s?[–—]\s?(?=[$£€]?\d)")
_NEGATIVE_RE = re.compile(rf"(?<![\w.-])-(?={_NUM_DEC})")
_DECIMAL_RE = re.compile(rf"{_NUM}\.\d+|(?<!\d)\.\d+")
_INT_RE = re.compile(rf"{_NUM}")
_FRACTION_RE = re.compile(r"(\d+)\u2044(\d+)")
_ASCII_FRACTION_RE = re.compile(r"(?<![\d/.,])([1-9])/([2-9]|10)(?![\d/.,]\d?)")
_DOTTED_RE = re.compile(r"\b\d+(?:\.\d+){2,}\b")  # versions, IP addresses: 3.14.15
_HASH_NUM_RE = re.compile(r"#\s?(?=\d)")

_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "×": " times ", "°": " degrees "}
_SYMBOLS["%"] = " percent "
_UNICODE_PUNCT = {
    **dict.fromkeys("‘’‚‛′`´", "'"),
    **dict.fromkeys("“”„‟″«»", '"'),
    **dict.fromkeys("‐‑‒−", "-"),
    **dict.fromkeys("–—―", " - "),
    "…": "...",
    "\u00ad": "",  # soft hyphen
    "\u200b": "",  # zero-width space
    "\ufeff": "",  # byte order mark
}
_PUNCT_TABLE = str.maketrans(_UNICODE_PUNCT)

# Titles come before a name, so their dot never ends a sentence.
_TITLES = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miz",
    "prof": "professor",
    "capt": "captain",
    "col": "colonel",
    "gen": "general",
    "lt": "lieutenant",
    "sgt": "sergeant",
    "rev": "reverend",
    "hon": "honorable",
    "mt": "mount",
}
# These can end a sentence: their dot is kept when the sentence seems to end there.
_SUFFIXES = {
    "jr": "junior",
    "sr": "senior",
    "co": "company",
    "ltd": "limited",
    "inc": "incorporated",
    "esq": "esquire",
    "vs": "versus",
    "approx": "approximately",
    "dept": "department",
    "govt": "government",
    "e.g": "for example",
    "i.e": "that is",
    "etc": "et cetera",
    "cf": "compare",
    "viz": "namely",
}
_TITLE_RE = re.compile(r"\b(?i:(" + "|".join(_TITLES) + r"))\.")
_SUFFIX_RE = re.compile(r"\b(?i:(" + "|".join(re.escape(k) for k in _SUFFIXES) + r"))\.(\s*$|\s+(?=[A-Z]))?")
# "Dr. Watson" is a doctor and "St. Paul" a saint; "Baker St." is a street and "Mulholland Dr." a drive.
_TITLE_OR_PLACE_RE = re.compile(r"(\b[A-Z][a-z]+\s+)?\b(?i:(dr|st))\.(\s+(?=[A-Z])|)")
_TITLE_OR_PLACE = {"dr": ("doctor", "drive"), "st": ("saint", "street")}
_NO_RE = re.compile(r"\b(No|no|NO)\.\s?(?=\d)")


def _title_or_place(m: re.Match) -> str:
    before, abbrev, space = m.group(1) or "", m.group(2), m.group(3)
    title, place = _TITLE_OR_PLACE[abbrev.lower()]
    sentence_start = not m.string[: m.start()].rstrip() or m.string[: m.start()].rstrip()[-1] in ".!?\"'"
    if space and (not before or sentence_start):  # "Dr. Watson", "Visit St. Paul", "at St. Paul's"
        return before + _match_case(title, abbrev) + space
    # "Baker St." / "Baker St. He left": a place; the dot may end the sentence.
    return before + _match_case(place, abbrev) + ("." + space if space else "")


def _match_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def _money(m: re.Match) -> str:
    if m.group(4):  # amount then symbol: "5€"
        symbol, amount, scale = m.group(5), m.group(4), None
    else:
        symbol, amount, scale = m.group(1), m.group(2), m.group(3)
    unit, units, sub, subs = _CURRENCIES[symbol]
    if scale:
        scale = _SCALE_ABBREV.get(scale.lower(), scale.lower())
        return f" {_decimal(amount)} {scale} {units} "
    whole, _, frac = amount.replace(",", "").partition(".")
    whole_n = int(whole or "0")
    if frac and (len(frac) != 2 or not sub):
        return f" {_decimal(amount)} {units} "
    parts = []
    if whole_n or not frac or int(frac) == 0:
        parts.append(f"{number_to_words(whole_n)} {unit if whole_n == 1 else units}")
    if frac and int(frac):
        parts.append(f"{number_to_words(int(frac))} {sub if int(frac) == 1 else subs}")
    return " " + " and ".join(parts) + " "


def _time(m: re.Match) -> str:
    hour, minute, has_ampm = int(m.group(1)), int(m.group(2)), m.group(3) is not None
    words = number_to_words(hour)
    if minute == 0:
        return words if has_ampm else words + " o'clock"
    return words + (f" oh {number_to_words(minute)}" if minute < 10 else f" {number_to_words(minute)}")


def _fraction(m: re.Match) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    if den == 2:
        name = "half" if num == 1 else "halves"
    elif den == 4:
        name = "quarter" if num == 1 else "quarters"
    else:
        name = ordinal_words(den) + ("" if num == 1 else "s")
    return f"{number_to_words(num)} {name}"


def _vulgar_fractions(text: str) -> str:
    """'1½' -> '1 and 1⁄2' before NFKC, which would otherwise glue it into '11⁄2'."""
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "No" and "\u2044" in unicodedata.normalize("NFKC", ch):
            out.append((" and " if i and text[i - 1].isdigit() else "") + unicodedata.normalize("NFKC", ch))
        else:
            out.append(ch)
    return "".join(out)


def _spaced(m: re.Match, words: str) -> str:
    """Keep words apart from letters glued to the number ("A4" -> "A four")."""
    before = m.string[m.start() - 1] if m.start() else ""
    after = m.string[m.end()] if m.end() < len(m.string) else ""
    return (" " if before.isalpha() else "") + words + (" " if after.isalpha() else "")


def _integer(m: re.Match) -> str:
    digits = m.group(0)
    return _spaced(m, year_to_words(int(digits)) if _is_year(digits) else _cardinal(digits))


def _keep_end(m: re.Match, words: str) -> str:
    return words + ("." + m.group(2) if m.group(2) is not None else "")


def normalize_text(text: str) -> str:
    """Normalise an English transcript for TTS: spell out numbers and symbols, unify unicode, keep case."""
    text = unicodedata.normalize("NFKC", _vulgar_fractions(text))
    text = _RANGE_RE.sub(lambda m: f"{m.group(1)} to ", text)  # before dashes become " - "
    text = text.translate(_PUNCT_TABLE)
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    # Abbreviations before numbers: "No. 5" needs the digit still there.
    text = _NO_RE.sub(lambda m: _match_case("number", m.group(1)) + " ", text)
    text = _TITLE_OR_PLACE_RE.sub(_title_or_place, text)
    text = _TITLE_RE.sub(lambda m: _match_case(_TITLES[m.group(1).lower()], m.group(1)), text)
    text = _SUFFIX_RE.sub(
        lambda m: _keep_end(m, _match_case(_SUFFIXES[m.group(1).lower()], m.group(1))), text
    )
    # Numbers, most specific pattern first.
    text = _FRACTION_RE.sub(_fraction, text)
    text = _ASCII_FRACTION_RE.sub(
        lambda m: _fraction(m) if int(m.group(1)) < int(m.group(2)) else m.group(0), text
    )
    text = _DOTTED_RE.sub(lambda m: " point ".join(_cardinal(d) for d in m.group(0).split(".")), text)
    text = _CURRENCY_RE.sub(_money, text)
    text = _PERCENT_RE.sub(lambda m: f"{_decimal(m.group(1))} percent", text)
    text = _DEGREE_RE.sub(
        lambda m: (
            f"{_decimal(m.group(1))} degrees" + {"C": " Celsius", "F": " Fahrenheit", None: ""}[m.group(2)]
        ),
        text,
    )
    text = _AMPM_RE.sub(lambda m: f" {m.group(1).lower()} m", text)
    text = _TIME_RE.sub(_time, text)
    text = _ORDINAL_RE.sub(lambda m: _spaced(m, ordinal_words(int(m.group(1).replace(",", "")))), text)
    text = _DECADE_RE.sub(
        lambda m: _plural(year_to_words(int(m.group(1))) if _is_year(m.group(1)) else _cardinal(m.group(1))),
        text,
    )
    text = _NEGATIVE_RE.sub("minus ", text)
    text = _HASH_NUM_RE.sub("number ", text)
    text = _DECIMAL_RE.sub(lambda m: _spaced(m, _decimal(m.group(0))), text)
    text = _INT_RE.sub(_integer, text)
    for symbol, words in _SYMBOLS.items():
        text = text.replace(symbol, words)
    text = " ".join(text.split())
    return re.sub(r" ([,.;:!?])", r"\1", text)
