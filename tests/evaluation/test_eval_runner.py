"""The synthesis path of the harness, end to end, with a test double for the synthesizer.

`GroundTruthSynthesizer` is a TEST DOUBLE standing in for `lm.inference.synthesizer.Synthesizer` (same call
shape): it "synthesises" a target text by returning that utterance's real recording. Everything else is real:
list parsing, audio I/O, Whisper, resemblyzer, DNSMOS, the CSV / JSON / Markdown writers.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from evaluation.audio import load_audio
from evaluation.cases import read_list
from evaluation.runner import EvalConfig, run_evaluation


@dataclass
class FakeResult:
    wav: np.ndarray
    sample_rate: int
    rtf: float
    first_audio_seconds: float


class GroundTruthSynthesizer:
    """Test double: maps each target text to its ground-truth recording, records every call."""

    def __init__(self, recordings: dict[str, Path]):
        # a None recording stands for a model that stops at step 0 and returns no audio
        self.audio = {text: load_audio(path) if path else (np.zeros(0, np.float32), 24000)
                      for text, path in recordings.items()}
        self.calls = []

    @classmethod
    def from_cases(cls, cases):
        return cls({c.target_text: c.ground_truth_wav for c in cases})

    def synthesize(self, text, prompt_wav, prompt_sample_rate, prompt_text=None, seed=None, **decode):
        self.calls.append(dict(text=text, prompt_sample_rate=prompt_sample_rate, prompt_text=prompt_text,
                               seed=seed, decode=decode, prompt_len=len(prompt_wav)))
        wav, rate = self.audio[text]
        return FakeResult(wav[None, :], rate, rtf=0.25, first_audio_seconds=0.1)  # [C, T] like a codec

    def synthesize_batch(self, requests):
        return [self.synthesize(**r) for r in requests]

    def decode_config(self):
        return {"temperature": 1.0, "top_k": 50, "max_seconds": 20.0}


def _clip(speech_dir, name):
    folder = "cmu-arctic-sample" if name.startswith("cmu") else "ljspeech-sample"
    return speech_dir / folder / name


# Clips chosen to be cheap for DNSMOS, which repeats short audio past 9 s and scores every 1 s hop.
LJ11 = ("LJ001-0011.wav", "it is of the first importance that the letter used should be fine in form;")
AXB4 = ("cmu_arctic_us_axb_a0004.wav", "Lord, but I'm glad to see you again, Phil.")


def test_synthesis_run_writes_three_reports(tmp_path, speech_dir, scorers):
    lst = tmp_path / "two.lst"
    lj_prompt = _clip(speech_dir, "LJ001-0004.wav")
    axb_prompt = _clip(speech_dir, "cmu_arctic_us_axb_a0006.wav")
    lst.write_text(f"lj|produced the block books|{lj_prompt}|{LJ11[1]}|{_clip(speech_dir, LJ11[0])}\n"
                   f"axb|God bless 'em|{axb_prompt}|{AXB4[1]}|{_clip(speech_dir, AXB4[0])}\n")
    cases = read_list(lst)
    synth = GroundTruthSynthesizer.from_cases(cases)
    config = EvalConfig(list_path=lst, out_dir=tmp_path / "out", checkpoint=Path("ck"), seed=7,
                        adapter=Path("lora_dir"), batch_size=2, decode={"temperature": 0.6})
    summary = run_evaluation(config, synthesizer=synth, scorers=scorers)

    # the synthesizer got the case's text, prompt, transcript, a per-case seed and the decode overrides
    assert [c["seed"] for c in synth.calls] == [7, 8]
    assert [c["text"] for c in synth.calls] == [c.target_text for c in cases]
    assert synth.calls[0]["prompt_text"] == cases[0].prompt_text
    assert synth.calls[0]["decode"] == {"temperature": 0.6}

    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("system", "ground_truth"):
        assert {"wer", "wer_mean_per_utt", "wer_above_50", "sim", "dnsmos_ovrl", "rtf"} <= set(on_disk[key])
    system, truth = on_disk["system"], on_disk["ground_truth"]
    # the "system" returned the real recordings, so it must score exactly like the ground truth
    assert system["wer"] == pytest.approx(truth["wer"])
    assert system["sim"] == pytest.approx(truth["sim"], abs=1e-3)
    assert system["dnsmos_ovrl"] == pytest.approx(truth["dnsmos_ovrl"], abs=0.05)  # 16-bit wav round trip
    assert system["wer"] < 0.2 and system["sim"] > 0.6
    assert system["rtf"] == pytest.approx(0.25) and truth["rtf"] is None
    cfg = on_disk["config"]
    assert cfg["seed"] == 7
    assert cfg["adapter"] == "lora_dir"
    assert "- LoRA adapter: `lora_dir`" in (tmp_path / "out" / "report.md").read_text()
    assert cfg["decode_config"] == {"temperature": 0.6, "top_k": 50, "max_seconds": 20.0}
    assert cfg["metrics"]["asr"]["model"].endswith("model")

    with open(tmp_path / "out" / "utterances.csv") as f:
        rows = list(csv.DictReader(f))
    a, b = cases[0].id, cases[1].id
    assert [(r["id"], r["system"]) for r in rows] == [
        (a, "system"), (a, "ground_truth"), (b, "system"), (b, "ground_truth")]
    assert all(r["hypothesis"] for r in rows)
    assert (tmp_path / "out" / "wavs" / f"{cases[0].id}.wav").is_file()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| system |" in report and "| ground_truth |" in report and "seed: 7" in report


def test_unreadable_prompt_is_logged_and_skipped_not_fatal(tmp_path, speech_dir, scorers, caplog):
    clip = _clip(speech_dir, LJ11[0])
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    lst = tmp_path / "list.lst"
    lst.write_text(f"bad|x|{broken}|{LJ11[1]}\ngood||{clip}|{LJ11[1]}|{clip}\n")
    synth = GroundTruthSynthesizer.from_cases(read_list(lst)[1:])
    summary = run_evaluation(EvalConfig(list_path=lst, out_dir=tmp_path / "out", checkpoint=Path("ck"),
                                        score_ground_truth=False), synthesizer=synth, scorers=scorers)
    assert summary["num_cases"] == 2
    assert summary["system"]["n"] == 2 and summary["system"]["n_failed"] == 1
    assert summary["failed"][0]["id"] == "bad"
    assert "broken.wav: unreadable audio" in summary["failed"][0]["error"]
    assert "skipping case bad" in caplog.text
    assert synth.calls[0]["prompt_text"] is None  # empty prompt_text -> speaker-prompt mode
    assert summary["system"]["counts"]["wer"] == 1


def test_failing_and_silent_synthesis_are_recorded_per_case(tmp_path, speech_dir, scorers):
    clip = _clip(speech_dir, AXB4[0])
    lst = tmp_path / "list.lst"
    lst.write_text(f"a||{clip}|{AXB4[1]}\nb||{clip}|unknown text\nc||{clip}|four words said here\n")
    # no recording for "unknown text": raises KeyError for case b only; case c returns no audio at all
    synth = GroundTruthSynthesizer({AXB4[1]: clip, "four words said here": None})
    summary = run_evaluation(EvalConfig(list_path=lst, out_dir=tmp_path / "out", checkpoint=Path("ck"),
                                        batch_size=3, score_ground_truth=False, save_audio=False),
                             synthesizer=synth, scorers=scorers)
    system = summary["system"]
    assert system["n_failed"] == 1
    assert summary["failed"] == [{"id": "b", "system": "system", "error": "synthesis: 'unknown text'"},
                                 {"id": "c", "system": "system", "error": "empty audio"}]
    # silence counts as all words deleted: it raises WER instead of dropping out of it
    assert system["counts"]["wer"] == 2 and system["wer_above_50"] == 1
    with open(tmp_path / "out" / "utterances.csv") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    # normalised reference of a: "lord but i am glad to see you again phil"; c: 4 words, all deleted
    assert (int(rows["a"]["ref_words"]), int(rows["c"]["ref_words"]), int(rows["c"]["errors"])) == (10, 4, 4)
    assert int(rows["a"]["errors"]) <= 2
    assert system["wer"] == pytest.approx((int(rows["a"]["errors"]) + 4) / (10 + 4))
    assert "ground_truth" not in summary
