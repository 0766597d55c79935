"""Text normalisation and the sentencepiece tokenizer (byte fallback)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from data_pipeline.ingest.config import IngestConfig
from data_pipeline.ingest.ingest import ingest
from data_pipeline.text.normalize import normalize_text, number_to_words, ordinal_words, year_to_words
from data_pipeline.text.tokenizer import TextTokenizer
from data_pipeline.text.training_text import iter_transcripts

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety-nine"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (1000, "one thousand"),
        (1_000_010, "one million ten"),
        (2_500_000_000, "two billion five hundred million"),
        (-7, "minus seven"),
    ],
)
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_ordinals_and_years():
    assert [ordinal_words(n) for n in (1, 2, 3, 5, 12, 20, 21, 100, 111)] == [
        "first", "second", "third", "fifth", "twelfth", "twentieth", "twenty-first", "one hundredth",
        "one hundred eleventh",
    ]  # fmt: skip
    assert [year_to_words(y) for y in (1984, 1905, 1900, 2000, 2007, 2024)] == [
        "nineteen eighty-four", "nineteen oh five", "nineteen hundred", "two thousand", "two thousand seven",
        "twenty twenty-four",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Mr. Smith met Mrs. Jones.", "Mister Smith met Missus Jones."),
        ("Dr. Watson lives on Baker St. He is away.", "Doctor Watson lives on Baker Street. He is away."),
        ("Visit St. Paul's, then Elm Dr. at noon.", "Visit Saint Paul's, then Elm Drive at noon."),
        ("apples, pears, etc. And more.", "apples, pears, et cetera. And more."),
        ("cats, e.g. lions", "cats, for example lions"),
        ("It costs $5.50 today.", "It costs five dollars and fifty cents today."),
        ("$1 or $0.99 or $1.5", "one dollar or ninety-nine cents or one point five dollars"),
        ("£3 and €20", "three pounds and twenty euros"),
        ("a $2.5 billion deal", "a two point five billion dollars deal"),
        ("Up 50% or 3.5 %", "Up fifty percent or three point five percent"),
        ("on the 21st and 2nd of May", "on the twenty-first and second of May"),
        ("In 1984 and 2007.", "In nineteen eighty-four and two thousand seven."),
        ("the 1990s and the '80s", "the nineteen nineties and the eighties"),
        ("pi is 3.14", "pi is three point one four"),
        ("1,234,567 people", "one million two hundred thirty-four thousand five hundred sixty-seven people"),
        ("It was -5°C, then 41 °F.", "It was minus five degrees Celsius, then forty-one degrees Fahrenheit."),
        ("at 3:30 p.m. and 10:00.", "at three thirty p m and ten o'clock."),
        ("No. 7 won 2–3 times", "Number seven won two to three times"),
        ("Tom & Jerry + 2 = 4 @ home", "Tom and Jerry plus two equals four at home"),
        ("\u201cHi\u201d \u2018you\u2019 \u2014 wait\u2026", "\"Hi\" 'you' - wait..."),
        ("ｆｕｌｌ　ｗｉｄｔｈ １２３", "full width one hundred twenty-three"),
        ("1½ cups, ¼ spoon, 3/4 mile", "one and one half cups, one quarter spoon, three quarters mile"),
        ("code 007, room 0800", "code zero zero seven, room zero eight zero zero"),
        ("an A4 sheet", "an A four sheet"),
        ("  spaced \t out\n text ", "spaced out text"),
        ("Café naïve résumé", "Café naïve résumé"),
    ],
)
def test_normalize_text(raw, normalized):
    assert normalize_text(raw) == normalized


def test_normalize_is_idempotent():
    text = "Dr. Smith paid $5.50 on the 21st of May 1984 at 3:30 p.m., about 50% of £10."
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert not any(ch.isdigit() for ch in once)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return list(iter_transcripts(SPEECH / "ljspeech-sample" / "transcripts.tsv"))


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory) -> tuple[TextTokenizer, Path]:
    path = tmp_path_factory.mktemp("tok") / "text.model"
    return TextTokenizer.train(corpus, path, vocab_size=600), path


HARD = [
    "Emoji 🎉🦜 and a ZWJ family 👩‍👩‍👧",
    "中文测试，日本語のテキスト、한국어",
    "Accents: façade, jalapeño, Ærøskøbing, Zürich, São Paulo",
    "Ωμέγα and кириллица and עברית",
    "Mixed 3 numbers: $12.40 on 3/4 of the 21st",
]


@pytest.mark.parametrize("text", HARD)
def test_byte_fallback_round_trip(tokenizer, text):
    tok, _ = tokenizer
    ids = tok.encode(text)
    assert ids and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.unk_id not in ids  # never out of vocabulary
    assert tok.decode(ids) == normalize_text(text)


def test_tokenizer_save_load_and_vocab(tokenizer, corpus, tmp_path):
    tok, path = tokenizer
    assert path.is_file() and tok.vocab_size == len(tok) == 600
    loaded = TextTokenizer.load(path)
    for text in corpus[:5] + HARD:
        assert loaded.encode(text) == tok.encode(text)
    assert tok.encode_batch(corpus[:3]) == [tok.encode(t) for t in corpus[:3]]
    # Real pieces were learned: common words are single pieces, so text is much shorter than its bytes.
    assert tok.id_to_piece(tok.encode("the")[0]) == "▁the"
    assert sum(len(tok.encode(t)) for t in corpus) < 0.5 * sum(len(t.encode()) for t in corpus)
    raw = TextTokenizer.load(path, normalize=False)
    assert raw.decode(raw.encode("Mr. 5")) == "Mr. 5"
    with pytest.raises(FileNotFoundError):
        TextTokenizer.load(tmp_path / "nope.model")


def test_vocab_size_too_large_is_lowered_too_small_raises(corpus, caplog):
    with caplog.at_level(logging.WARNING):
        tok = TextTokenizer.train(corpus[:5], vocab_size=50_000)
    assert 256 < tok.vocab_size < 50_000
    assert "too large" in caplog.text
    assert tok.decode(tok.encode(corpus[0])) == normalize_text(corpus[0])
    with pytest.raises(ValueError, match="too small"):
        TextTokenizer.train(corpus, vocab_size=100)
    with pytest.raises(ValueError, match="no text"):
        TextTokenizer.train(["", "  "], vocab_size=300)


def test_transcripts_from_shards_and_text_files(tmp_path, corpus):
    out = tmp_path / "raw"
    ingest(SPEECH / "ljspeech-sample", out, IngestConfig(workers=0, shard_size_mb=1), progress=False)
    assert len(list(out.glob("*.tar"))) > 1
    assert sorted(iter_transcripts(out)) == sorted(corpus)
    text_file = tmp_path / "lines.txt"
    text_file.write_text("first line\n\n second line \n")
    assert list(iter_transcripts(text_file)) == ["first line", "second line"]
    with pytest.raises(FileNotFoundError):
        list(iter_transcripts(tmp_path / "empty_dir_that_is_missing"))


def test_train_text_tokenizer_cli(tmp_path, capsys):
    path = Path(__file__).resolve().parents[2] / "scripts" / "train_text_tokenizer.py"
    spec = importlib.util.spec_from_file_location("train_text_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = SPEECH / "cmu-arctic-sample" / "transcripts.tsv"
    assert (
        module.main(["--input", str(manifest), "--output", str(tmp_path / "t"), "--vocab-size", "300"]) == 0
    )
    assert "vocab_size 300" in capsys.readouterr().out
    tok = TextTokenizer.load(tmp_path / "t.model")
    assert tok.decode(tok.encode("Hello, 中文 🎉")) == "Hello, 中文 🎉"
