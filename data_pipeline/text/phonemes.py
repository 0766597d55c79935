"""Phoneme front end: normalised English text -> IPA with Debian's espeak-ng (apt-get install -y espeak-ng).

A small model should learn the text -> sound mapping sooner from phonemes than from spelling: "though",
"through" and "tough" share letters but not sounds. Punctuation is kept between the phonemised clauses
because it carries prosody (pauses, question intonation). espeak-ng runs as a subprocess (GPL-3 engine, not
linked); each clause is one call of a few milliseconds, cached, so a training loader pays it once a sentence.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

FRONTEND_PREFIX = "espeak-ng:"  # a front-end name is "espeak-ng:<voice>", e.g. "espeak-ng:en-us"
_CLAUSE = re.compile(r"([^,.;:!?]*)([,.;:!?]*)")


class PhonemizerError(RuntimeError):
    """espeak-ng is missing or failed on a text."""


def parse_frontend(name: str) -> str:
    """'espeak-ng:en-us' -> 'en-us'; anything else raises ValueError naming the accepted form."""
    if not name.startswith(FRONTEND_PREFIX) or not name[len(FRONTEND_PREFIX):].strip():
        raise ValueError(f"unknown text front end {name!r}; expected '{FRONTEND_PREFIX}<voice>', "
                         f"e.g. '{FRONTEND_PREFIX}en-us'")
    return name[len(FRONTEND_PREFIX):].strip()


class Phonemizer:
    """`Phonemizer('en-us')("Hello, world!")` -> 'həlˈoʊ, wˈɜːld!'."""

    def __init__(self, voice: str = "en-us", executable: str = "espeak-ng", cache_size: int = 1 << 16):
        path = shutil.which(executable)
        if path is None:
            raise PhonemizerError(f"{executable} is not installed; the phoneme front end needs it "
                                  "(apt-get install -y espeak-ng)")
        self.voice, self._exe = voice, path
        self._phonemize_clause = functools.lru_cache(maxsize=cache_size)(self._run_espeak)

    def __call__(self, text: str) -> str:
        parts = []
        for words, punct in _CLAUSE.findall(text):
            ipa = self._phonemize_clause(words.strip()) if words.strip() else ""
            parts.append(f"{ipa}{punct}" if ipa else punct)
        return " ".join(p for p in parts if p)

    def _run_espeak(self, clause: str) -> str:
        # "--" keeps a clause that starts with "-" from being read as an option.
        cmd = [self._exe, "-q", "--ipa", "-v", self.voice, "--", clause]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired as e:
            raise PhonemizerError(f"espeak-ng timed out on {clause[:80]!r}") from e
        if done.returncode != 0:
            raise PhonemizerError(f"espeak-ng (voice {self.voice}) failed on {clause[:80]!r}: "
                                  f"{done.stderr.strip()[:200]}")
        # espeak-ng may still break a long clause over several lines.
        return " ".join(done.stdout.split())
