"""The espeak-ng phoneme front end and a tokenizer that records it (needs Debian's espeak-ng: `make env`
installs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_pipeline.text.normalize import normalize_text
from data_pipeline.text.phonemes import Phonemizer, PhonemizerError, parse_frontend
from data_pipeline.text.tokenizer import TextTokenizer
from data_pipeline.text.training_text import iter_transcripts
from lm.training.config import ConfigError, resolve_config

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"
FRONTEND = "espeak-ng:en-us"


@pytest.fixture(scope="module")
def phonemize() -> Phonemizer:
    return Phonemizer("en-us")


@pytest.fixture(scope="module")
def phoneme_tokenizer(tmp_path_factory) -> tuple[TextTokenizer, Path]:
    corpus = list(iter_transcripts(SPEECH / "ljspeech-sample" / "transcripts.tsv"))
    path = tmp_path_factory.mktemp("tok") / "phonemes.model"
    return TextTokenizer.train(corpus, path, vocab_size=320, frontend=FRONTEND), path


def test_ipa_with_punctuation_kept(phonemize):
    ipa = phonemize("The cat sat, didn't it?")
    assert ipa.endswith("?") and ipa.count(",") == 1
    assert "kˈæt" in ipa and "sˈæt" in ipa
    assert not any(c in ipa for c in "abcfgqxy")  # no spelling left: IPA only
    # Spelling is gone, sound is kept: homophones agree and look-alikes differ.
    assert phonemize("two") == phonemize("too")
    assert phonemize("though") != phonemize("tough")
    assert phonemize("") == "" and phonemize("...") == "..."


def test_missing_engine_and_bad_frontend_names():
    with pytest.raises(PhonemizerError, match="apt-get install -y espeak-ng"):
        Phonemizer("en-us", executable="espeak-ng-that-is-not-installed")
    with pytest.raises(PhonemizerError, match="voice xx-nope"):
        Phonemizer("xx-nope")("hello")
    assert parse_frontend("espeak-ng:en-gb") == "en-gb"
    for bad in ("espeak-ng:", "festival:en", "phonemes"):
        with pytest.raises(ValueError, match="espeak-ng:<voice>"):
            parse_frontend(bad)


def test_tokenizer_records_and_applies_the_frontend(phoneme_tokenizer, phonemize, tmp_path):
    tok, path = phoneme_tokenizer
    assert tok.frontend == FRONTEND
    text = "Printing, in the only sense with which we are at present concerned."
    assert tok.decode(tok.encode(text)) == phonemize(normalize_text(text))
    assert tok.encode("I ate two.") == tok.encode("I ate too.")
    assert tok.encode_batch([text, "two"]) == [tok.encode(text), tok.encode("two")]
    # A copy of the one .model file is all it takes to encode the same way.
    copy = TextTokenizer.load(tok.save(tmp_path / "copy.model"))
    assert copy.frontend == FRONTEND and copy.encode(text) == tok.encode(text)
    spelling = TextTokenizer.train(list(iter_transcripts(SPEECH / "ljspeech-sample" / "transcripts.tsv")),
                                   vocab_size=320)
    assert spelling.frontend is None and spelling.decode(spelling.encode("two")) == "two"


def test_train_config_validates_the_frontend():
    cfg = resolve_config(overrides=[f"tokenizer.frontend={FRONTEND}"])
    assert cfg.tokenizer.frontend == FRONTEND
    with pytest.raises(ConfigError, match="tokenizer.frontend"):
        resolve_config(overrides=["tokenizer.frontend=festival:en"])
