"""scripts/evaluate.py end to end: a codec round trip of real clips through a random EnCodec."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "evaluate.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_and_argument_errors(capsys):
    evaluate = _load_script()
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--help"])
    assert exc.value.code == 0 and "--codec-only" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        evaluate.main(["--list", "x.lst", "--out", "o", "--codec-only"])  # no --codec
    assert "--codec-only needs --codec" in capsys.readouterr().err
    assert evaluate.parse_decode(["top_k=50", "temperature=0.7", "max-seconds=12"]) == {
        "top_k": 50, "temperature": 0.7, "max_seconds": 12}


@pytest.mark.integration
def test_codec_only_run_writes_the_three_reports(tmp_path, repo_list):
    out = tmp_path / "eval"
    rc = _load_script().main(["--codec-only", "--codec", "encodec_24khz:random", "--list", str(repo_list),
                              "--out", str(out), "--limit", "2", "--batch-size", "2", "--seed", "3"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    system, truth = summary["system"], summary["ground_truth"]
    assert summary["num_cases"] == 2 and system["n"] == 2 and not summary["failed"]
    # a random codec destroys the speech; the recordings themselves transcribe well
    assert system["wer"] > 0.5 and truth["wer"] < 0.2
    assert 1.0 <= system["pesq_wb"] < 2.0 and 0.0 <= system["stoi"] < 0.8
    assert system["rtf"] > 0 and truth["sim"] > system["sim"]
    assert summary["config"]["codec"]["spec"] == "encodec_24khz:random" and summary["config"]["seed"] == 3
    assert "PESQ-WB" in (out / "report.md").read_text()
    assert len((out / "utterances.csv").read_text().splitlines()) == 1 + 4  # header + 2 system + 2 truth
    assert len(list((out / "wavs").glob("*.wav"))) == 2


def _tiny_export(directory: Path, speech_dir: Path) -> Path:
    """An untrained tiny model in the export layout (as tests/lm builds it), for the real Synthesizer."""
    import csv

    import torch

    from data_pipeline.text.tokenizer import TextTokenizer
    from lm.checkpoint import save_model
    from lm.model.config import get_preset
    from lm.model.model import TTSModel

    texts = []
    for tsv in sorted(speech_dir.glob("*/transcripts.tsv")):
        with tsv.open() as f:
            texts += [row["transcript"] for row in csv.DictReader(f, delimiter="\t")]
    tokenizer = TextTokenizer.train(texts, directory / "tokenizer.model", vocab_size=400)
    config = get_preset("tiny", text_vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    save_model(TTSModel(config), config, directory,
               metadata={"codec": "encodec_24khz:random", "text_tokenizer": "tokenizer.model"})
    return directory


@pytest.mark.integration
def test_synthesis_run_on_a_tiny_checkpoint(tmp_path, speech_dir):
    export = _tiny_export(tmp_path / "export", speech_dir)
    lst = tmp_path / "one.lst"
    clip = speech_dir / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0002.wav"
    lst.write_text(f"c1||{clip}|Author of the danger trail.\n")
    out = tmp_path / "eval"
    rc = _load_script().main(["--checkpoint", str(export), "--list", str(lst), "--out", str(out),
                              "--seed", "5", "--decode", "max_seconds=0.3", "--top-k", "20"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    system = summary["system"]
    assert system["n"] == 1 and system["n_failed"] == 0 and "ground_truth" not in summary
    assert system["wer"] is not None and system["rtf"] > 0 and system["duration_s"] < 1.0
    decode = summary["config"]["decode_config"]
    assert decode["max_seconds"] == 0.3 and decode["top_k"] == 20 and summary["config"]["seed"] == 5
    assert (out / "report.md").is_file() and (out / "utterances.csv").is_file()
    assert (out / "wavs" / "c1.wav").is_file()


def test_codec_round_trip_can_decode_a_prefix_of_the_codebooks():
    """--codebooks N decodes what a model predicting N levels could at best produce: the first N levels."""
    import soundfile as sf
    import torch

    from codec import load_codec
    from evaluation.runner import codec_round_trip

    root = SCRIPT.parents[1]
    codec = load_codec(str(root / "models" / "codec_rvq16k"))
    clip = root / "tests" / "data" / "speech" / "cmu-arctic-sample" / "cmu_arctic_us_axb_a0005.wav"
    wav, rate = sf.read(clip, dtype="float32")
    full, two = (codec_round_trip(codec, [(wav, rate)], num_codebooks=n)[0].wav for n in (None, 2))
    codes = codec.encode(torch.from_numpy(wav)[None, None], sample_rate=rate).codes
    expected = codec.decode(codes[:, :2])[0, 0, : len(wav)].detach().numpy()
    assert len(two) == len(full) == len(wav)
    assert abs(two - expected).max() < 1e-5
    assert abs(two - full).mean() > 1e-3  # the other six levels do change the audio


def test_transcribe_prompts_hands_the_synthesizer_whispers_words(tmp_path, speech_dir, caplog):
    """--transcribe-prompts: what generate.py does without --prompt-text (the listed transcript unused)."""
    export = _tiny_export(tmp_path / "export", speech_dir)
    lst = tmp_path / "one.lst"
    clip = speech_dir / "cmu-arctic-sample" / "cmu_arctic_us_aew_a0001.wav"
    lst.write_text(f"c1|a listed transcript that is never used|{clip}|Hello there.\n")
    out = tmp_path / "eval"
    with caplog.at_level("INFO", logger="evaluation.runner"):
        assert _load_script().main(["--checkpoint", str(export), "--list", str(lst), "--out", str(out),
                                    "--transcribe-prompts", "--decode", "max_seconds=0.3"]) == 0
    heard = [r.getMessage() for r in caplog.records if "transcribed as" in r.getMessage()]
    assert len(heard) == 1 and "danger trail" in heard[0].lower() and "never used" not in heard[0]
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["transcribe_prompts"] is True and config["use_prompt_text"] is False
