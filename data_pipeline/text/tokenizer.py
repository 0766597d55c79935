"""The sentencepiece tokenizer for transcripts.

``TextTokenizer`` wraps a sentencepiece model trained with ``byte_fallback``: a character that is not in the
vocabulary is encoded as its UTF-8 bytes, so no input is ever out of vocabulary. Ids are sentencepiece's own;
the LM maps them into its token space (lm/model/vocab.py), data_pipeline never sees the LM vocabulary.
Text is normalised first (normalize.py) unless ``normalize=False``.

With a front end (``frontend="espeak-ng:en-us"``, data_pipeline/text/phonemes.py) the pieces are learnt on,
and encode, the IPA of the normalised text. The front end is recorded inside the sentencepiece model as one
extra piece (``<frontend:espeak-ng:en-us>``), so every copy of the single ``.model`` file (run dir, export,
adapter merge) encodes the same way with no side file to lose.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sentencepiece as spm
from tqdm import tqdm

from data_pipeline.text.normalize import normalize_text
from data_pipeline.text.phonemes import Phonemizer, parse_frontend

log = logging.getLogger(__name__)

_FRONTEND_PIECE = re.compile(r"^<frontend:(.+)>$")


def frontend_piece(frontend: str) -> str:
    return f"<frontend:{frontend}>"


class TextTokenizer:
    """Sentencepiece tokenizer with byte fallback; ``encode`` normalises first unless ``normalize=False``,
    then phonemises when the model was trained with a front end.

    Special ids: only ``<unk>`` (id 0), which byte fallback never emits; bos / eos / pad are the LM's.
    """

    def __init__(self, model_proto: bytes, normalize: bool = True):
        self._proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self.normalize = normalize
        self.frontend = self._recorded_frontend()
        self._phonemize = Phonemizer(parse_frontend(self.frontend)) if self.frontend else None

    def _recorded_frontend(self) -> str | None:
        # sentencepiece puts <unk> and user-defined symbols before the byte pieces and the learnt ones, so a
        # learnt piece that happens to read "<frontend:...>" is never taken for the marker.
        for i in range(self.sp.get_piece_size()):
            if self.sp.is_byte(i):
                break
            match = _FRONTEND_PIECE.match(self.sp.id_to_piece(i))
            if match:
                return match.group(1)
        return None

    def _prepare(self, text: str) -> str:
        text = normalize_text(text) if self.normalize else text
        return self._phonemize(text) if self._phonemize else text

    # -- building
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        out_path: str | Path | None = None,
        vocab_size: int = 4096,
        model_type: str = "bpe",
        character_coverage: float = 0.9995,
        normalize: bool = True,
        max_sentences: int = 5_000_000,
        num_threads: int = 2,
        frontend: str | None = None,
    ) -> TextTokenizer:
        """Train on transcripts (normalised first when ``normalize``, then phonemised by ``frontend``, e.g.
        "espeak-ng:en-us"); save to ``out_path`` when given.

        A ``vocab_size`` larger than the corpus supports is lowered to the largest possible value (with a
        warning) so tiny corpora work; one below the 256 byte pieces + characters + <unk> raises ValueError.
        """
        sentences = [t for t in ((normalize_text(x) if normalize else x) for x in texts) if t.strip()]
        if not sentences:
            raise ValueError("no text to train the tokenizer on")
        extra: dict = {}
        if frontend:
            sentences = _phonemize_all(Phonemizer(parse_frontend(frontend)), sentences)
            extra["user_defined_symbols"] = [frontend_piece(frontend)]
        options = dict(
            model_type=model_type,
            byte_fallback=True,
            character_coverage=character_coverage,
            # Our normalize_text already did NFKC; identity keeps decode(encode(x)) == x exactly.
            normalization_rule_name="identity",
            split_digits=True,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=num_threads,
            minloglevel=2,
            **extra,
        )
        proto = cls._train_proto(sentences, vocab_size, options)
        tok = cls(proto, normalize=normalize)
        if out_path is not None:
            tok.save(out_path)
        return tok

    @staticmethod
    def _train_proto(sentences: list[str], vocab_size: int, options: dict) -> bytes:
        for _attempt in range(2):
            buf = io.BytesIO()
            try:
                spm.SentencePieceTrainer.train(
                    sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size, **options
                )
                return buf.getvalue()
            except RuntimeError as e:
                too_high = re.search(
                    r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(e)
                )
                if too_high and _attempt == 0:
                    log.warning(
                        "vocab_size %d is too large for this corpus (%d sentences); using %s",
                        vocab_size,
                        len(sentences),
                        too_high.group(1),
                    )
                    vocab_size = int(too_high.group(1))
                    continue
                too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
                if too_low:
                    raise ValueError(
                        f"vocab_size {vocab_size} is too small: byte fallback needs 256 byte pieces plus the "
                        f"corpus characters and <unk> ({too_low.group(2)} in all); raise it or lower "
                        "character_coverage"
                    ) from e
                raise
        raise AssertionError("unreachable")

    @classmethod
    def load(cls, path: str | Path, normalize: bool = True) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model {path} does not exist")
        return cls(path.read_bytes(), normalize=normalize)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != ".model":
            path = path.with_name(path.name + ".model")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self._proto)
        return path

    # -- use
    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    def encode(self, text: str) -> list[int]:
        """Text -> sentencepiece ids (no bos/eos)."""
        return self.sp.encode(self._prepare(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode([self._prepare(t) for t in texts])

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def model_proto(self) -> bytes:
        return self._proto


def _phonemize_all(phonemize: Phonemizer, sentences: list[str]) -> list[str]:
    """Phonemise a corpus with a few espeak-ng processes at a time (they run outside the GIL)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(tqdm(pool.map(phonemize, sentences, chunksize=16), total=len(sentences),
                         desc="phonemise", unit="sentence", mininterval=5, disable=len(sentences) < 500))
