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
