#!/usr/bin/env python
"""Fine-tune a voice: a LoRA adapter for one speaker from minutes of their recordings, kept by similarity.

    python scripts/finetune_lora.py --checkpoint models/default --data my_voice/ --out runs/lora_me
    deepspeed --num_gpus 2 scripts/finetune_lora.py --checkpoint ... --data ... --out ...     # several ranks
    python scripts/generate.py --checkpoint models/default --adapter runs/lora_me/adapter \\
        --prompt-audio my_voice/clip1.wav --text "Hello." --out hello.wav
    python scripts/merge_lora.py --checkpoint models/default --adapter runs/lora_me/adapter --out merged/

--data: a folder of one speaker's recordings with transcripts (`.txt` / `.lab` beside each audio file, a
manifest, or any layout scripts/ingest.py reads) or raw shards from scripts/ingest.py. It is ingested,
split (a held-out share, never trained on, chosen deterministically by --seed), and the training part is
tokenized with the codec the checkpoint names (OUT/data/).

At step 0 (the zero-shot baseline: the base model prompted with the same clip) and every --eval-every
steps, the held-out sentences are synthesised in one batch, prompted with a fixed training clip of the
speaker, and scored: speaker similarity (resemblyzer) against the centroid of the speaker's held-out clips,
and WER (Whisper tiny.en). The best adapter by similarity whose WER stays within --wer-margin of the
baseline's is kept in OUT/adapter; training stops when --patience evaluations bring no better one.
Writes OUT/curve.jsonl, OUT/curve.md, OUT/summary.json, OUT/samples/step_N/*.wav.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import evaluation  # noqa: F401
except ImportError:  # run from a checkout whose editable install predates the evaluation package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline.loading.batching import BatchingConfig  # noqa: E402
from evaluation.asr import ASRConfig, WhisperASR, text_word_errors  # noqa: E402
from evaluation.audio import load_audio, save_audio  # noqa: E402
from evaluation.speaker import SpeakerEncoder, cosine  # noqa: E402
from lm.adapters.lora import (  # noqa: E402
    DEFAULT_TARGETS,
    DTYPES,
    PARTS,
    LoraSettings,
    adapter_bytes,
    base_identity,
    stored_dtype,
)
from lm.adapters.lora_data import Clip, SpeakerData  # noqa: E402
from lm.adapters.lora_finetune import FinetuneConfig, FinetuneResult, json_safe  # noqa: E402
from lm.checkpoint import MODEL_FILE  # noqa: E402
from lm.inference.export_dir import DEFAULT_MODEL_DIR  # noqa: E402
from lm.inference.synthesis_types import SynthesisRequest  # noqa: E402
from lm.inference.synthesizer import Synthesizer  # noqa: E402
from lm.model.model import TTSModel  # noqa: E402

log = logging.getLogger("finetune_lora")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d, lora = FinetuneConfig(), LoraSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_MODEL_DIR,
                   help="base model: an export directory (default: %(default)s)")
    p.add_argument("--data", type=Path, required=True, help="the speaker's recordings, or raw shards")
    p.add_argument("--out", type=Path, required=True, help="output directory (adapter, curve, data)")
    g = p.add_argument_group("LoRA")
    g.add_argument("--rank", type=int, default=lora.rank, help="LoRA rank r (default %(default)s)")
    g.add_argument("--alpha", type=float, default=lora.alpha, help="LoRA alpha; scale alpha/r (%(default)s)")
    g.add_argument("--dropout", type=float, default=lora.dropout, help="LoRA dropout (%(default)s)")
    g.add_argument("--targets", nargs="+", default=list(lora.targets), choices=DEFAULT_TARGETS,
                   help="projections to adapt (default: all attention + MLP projections)")
    g.add_argument("--parts", nargs="+", default=["nar"], choices=PARTS,
                   help="AR decoder and / or NAR head (default: nar. On models/default with 197 s of LJ "
                        "Speech, adapting the AR too raised SIM more but WER rose 9.6-236 points at every "
                        "evaluation, so no adapter passed the WER gate; see the README)")
    g.add_argument("--adapter-dtype", default="auto", choices=["auto", *DTYPES],
                   help="how the adapter is stored; auto: as the base model's weights (%(default)s)")
    g = p.add_argument_group("training")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps (%(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (%(default)s)")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="(%(default)s)")
    g.add_argument("--max-frames", type=int, default=d.batching.max_frames,
                   help="padded target frames per batch (%(default)s)")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time budget: stop (after a last evaluation) before it is spent")
    g.add_argument("--deepspeed", "--deepspeed_config", dest="deepspeed", default="ds_configs/zero2.json",
                   help="DeepSpeed system config, ZeRO stage 0-2 (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="split, initialisation, batches (%(default)s)")
    g = p.add_argument_group("evaluation and selection")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between evaluations; 0: none, "
                   "keep the last adapter (%(default)s)")
    g.add_argument("--patience", type=int, default=d.patience,
                   help="evaluations without a better adapter before stopping; 0: never (%(default)s)")
    g.add_argument("--wer-margin", type=float, default=d.wer_margin,
                   help="keep only adapters whose WER is at most baseline + this, a fraction (%(default)s)")
    g.add_argument("--min-delta", type=float, default=d.min_delta, help="SIM gain that counts (%(default)s)")
    g.add_argument("--holdout", type=float, default=0.15, help="held-out share of the clips (%(default)s)")
    g.add_argument("--min-holdout", type=int, default=3, help="at least this many held out (%(default)s)")
    g.add_argument("--eval-sentences", type=int, default=6,
                   help="held-out sentences synthesised per evaluation (%(default)s)")
    g.add_argument("--prompt-seconds", type=float, default=3.0,
                   help="the prompt is the training clip closest to this length (%(default)s)")
    g.add_argument("--eval-max-seconds", type=float, default=None,
                   help="cap on each synthesised sentence (default: 1.5 x the longest held-out clip + 1 s)")
    g.add_argument("--continuation", action="store_true",
                   help="give the prompt's transcript (continuation mode) instead of speaker-prompt mode")
    g.add_argument("--speaker", default="target", help="speaker name for the ingested clips")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per process for torch and the ASR (default %(default)s: on a shared "
                        "2-core machine a second thread made both training and synthesis 5-20x slower)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    lora = LoraSettings(rank=args.rank, alpha=args.alpha, dropout=args.dropout, targets=tuple(args.targets),
                        parts=tuple(args.parts))
    budget = args.max_minutes * 60 if args.max_minutes else None  # run() deducts the time before training
    dtype = args.adapter_dtype
    if dtype == "auto":
        dtype = str(stored_dtype(args.checkpoint)).replace("torch.", "")
    return FinetuneConfig(lora=lora, max_steps=args.max_steps, eval_every=args.eval_every,
                          patience=args.patience, wer_margin=args.wer_margin, min_delta=args.min_delta,
                          time_budget_s=budget, lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
                          batching=BatchingConfig(max_frames=args.max_frames), adapter_dtype=dtype)


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class CaseScore:
    key: str
    text: str
    hypothesis: str
    wer: float
    errors: int
    ref_words: int
    sim: float
    seconds: float


class HeldOutEvaluator:
    """Synthesise held-out sentences with one fixed prompt clip; score SIM against the centroid of the
    held-out clips' speaker embeddings (resemblyzer) and corpus WER (Whisper tiny.en)."""

    def __init__(self, base: Synthesizer, data: SpeakerData, out_dir: Path, num_sentences: int,
                 prompt_seconds: float, continuation: bool, seed: int, max_seconds: float | None = None
                 ) -> None:
        self.base, self.out, self.seed = base, out_dir, seed
        self.cases = data.heldout[:num_sentences] if num_sentences > 0 else data.heldout
        self.prompt = min(data.train, key=lambda c: (abs(c.duration - prompt_seconds), c.key))
        self.prompt_wav, self.prompt_rate = load_audio(self.prompt.path)
        self.prompt_text = self.prompt.text if continuation else None
        # one generation cap for every row (rows with different caps could not share an AR batch)
        self.max_seconds = max_seconds or 1.5 * max(c.duration for c in self.cases) + 1.0
        t0 = time.perf_counter()
        self.asr = WhisperASR(ASRConfig(cpu_threads=max(1, torch.get_num_threads())))
        self.speaker = SpeakerEncoder()
        embeddings = np.stack([self.speaker.embed(*load_audio(c.path)) for c in data.heldout])
        self.centroid = embeddings.mean(0)
        self.ground_truth_sim = _leave_one_out_sim(embeddings)
        log.info("evaluation: %d held-out sentences, prompt %s (%.1f s), metric models loaded in %.1f s; "
                 "real held-out clips score SIM %.3f against the others' centroid (the ceiling)",
                 len(self.cases), self.prompt.key, self.prompt.duration, time.perf_counter() - t0,
                 self.ground_truth_sim)

    def describe(self) -> dict[str, Any]:
        return {"prompt": self.prompt.key, "prompt_seconds": self.prompt.duration,
                "prompt_mode": "continuation" if self.prompt_text else "speaker-prompt",
                "cases": [c.key for c in self.cases], "ground_truth_sim": self.ground_truth_sim,
                "max_seconds": self.max_seconds}

    def __call__(self, model: TTSModel, step: int) -> dict[str, Any]:
        synth = Synthesizer(model, self.base.tokenizer, self.base.codec, device=self.base.device,
                            decode=self.base.defaults)
        requests = [SynthesisRequest(c.text, self.prompt_wav, self.prompt_rate, self.prompt_text,
                                     seed=self.seed + i, decode={"max_seconds": self.max_seconds})
                    for i, c in enumerate(self.cases)]
        results = synth.synthesize_batch(requests)
        scores = [self._score(c, r.wav, r.sample_rate, step)
                  for c, r in zip(self.cases, results, strict=True)]
        wer = sum(s.errors for s in scores) / max(1, sum(s.ref_words for s in scores))  # corpus WER
        sim = float(np.mean([s.sim for s in scores]))
        return {"sim": sim, "wer": wer, "cases": [asdict(s) for s in scores]}

    def _score(self, clip: Clip, wav: np.ndarray, rate: int, step: int) -> CaseScore:
        save_audio(self.out / "samples" / f"step_{step:05d}" / f"{clip.key}.wav", wav, rate)
        hypothesis, we = self.asr.score(wav, rate, clip.text) if wav.size else ("", None)
        if we is None:
            we = text_word_errors(clip.text, "", self.asr.normalizer)
        try:
            sim = cosine(self.speaker.embed(wav, rate), self.centroid)
        except ValueError as err:  # empty / silent output: no voice is as far from the speaker as it gets
            log.warning("step %d, %s: no speaker embedding (%s); SIM 0", step, clip.key, err)
            sim = 0.0
        return CaseScore(clip.key, clip.text, hypothesis, we.wer, we.errors, we.ref_words, sim,
                         len(wav) / rate)


def _leave_one_out_sim(embeddings: np.ndarray) -> float:
    """Mean similarity of each real clip to the centroid of the other clips."""
    n = len(embeddings)
    total = embeddings.sum(0)
    return float(np.mean([cosine(embeddings[i], (total - embeddings[i]) / (n - 1)) for i in range(n)]))


# ---------------------------------------------------------------------------------------------- the run


def setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)


def prepare(args: argparse.Namespace, base: Synthesizer, codec_spec: str, rank: int, world: int
            ) -> SpeakerData:
    """Rank 0 ingests / splits / tokenizes into OUT/data; the other ranks read what it wrote."""
    import torch.distributed as dist

    from lm.adapters.lora_data import load_speaker_data, prepare_speaker_data

    work = args.out / "data"
    if rank == 0:
        shutil.rmtree(args.out / "samples", ignore_errors=True)  # audio of an earlier run in the same OUT
        prepare_speaker_data(args.data, work, base.codec, codec_spec, args.holdout, args.min_holdout,
                             args.seed, num_shards=world, speaker=args.speaker,
                             align="auto" if base.model.config.alignment == "phoneme" else "off")
    dist.barrier()
    return load_speaker_data(work)


def report(args: argparse.Namespace, result: FinetuneResult, evaluator: HeldOutEvaluator | None,
           started: float) -> dict[str, Any]:
    """OUT/summary.json + the console summary (rank 0)."""
    model_bytes = (args.checkpoint / MODEL_FILE).stat().st_size
    size = adapter_bytes(result.adapter_dir)
    base, best = (result.curve[0], result.curve[result.best]) if result.curve else (None, None)
    summary = {
        "checkpoint": str(args.checkpoint), "data": str(args.data), "adapter": str(result.adapter_dir),
        "steps": result.steps, "stop_reason": result.stop_reason, "seconds": time.perf_counter() - started,
        "adapter_bytes": size, "model_bytes": model_bytes, "adapter_share": size / model_bytes,
        "evaluation": evaluator.describe() if evaluator else None,
        "baseline": {"sim": base.sim, "wer": base.wer} if base else None,
        "best": {"step": best.step, "sim": best.sim, "wer": best.wer} if best else None,
        "config": asdict(finetune_config(args)),
    }
    (args.out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    print(f"adapter      {result.adapter_dir}: {size / 2**20:.2f} MiB = {100 * size / model_bytes:.2f} % of "
          f"the model's {model_bytes / 2**20:.1f} MiB")
    if best is not None:
        print(f"zero-shot    SIM {base.sim:.4f}  WER {100 * base.wer:.1f} %")
        print(f"kept         step {best.step}: SIM {best.sim:.4f} ({best.sim - base.sim:+.4f})  "
              f"WER {100 * best.wer:.1f} % ({100 * (best.wer - base.wer):+.1f} points)")
    print(f"stopped      after {result.steps} steps ({result.stop_reason}), {summary['seconds']:.0f} s; "
          f"curve in {args.out / 'curve.md'}")
    return summary


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from lm.adapters.lora_finetune import LoraFinetuner
    from lm.inference.export_dir import export_assets
    from lm.training.deepspeed_setup import init_distributed, training_device
    from lm.training.trainer import _set_cpu_threads

    started = time.perf_counter()
    rank, world, local_rank = init_distributed()
    _set_cpu_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = finetune_config(args)
    _, codec_spec = export_assets(args.checkpoint)
    # an adapted AR learns the new voice, so it must read it: no house voice stands in (house_voices.py)
    decode = {"ar_voice": "prompt"} if "ar" in args.parts else {}
    base = Synthesizer.from_pretrained(args.checkpoint, device=training_device(local_rank), **decode)
    identity = base_identity(base.model, args.checkpoint, _metadata(args.checkpoint))
    data = prepare(args, base, codec_spec, rank, world)
    evaluator = None
    if rank == 0 and cfg.eval_every > 0:
        evaluator = HeldOutEvaluator(base, data, args.out, args.eval_sentences, args.prompt_seconds,
                                     args.continuation, args.seed, args.eval_max_seconds)
    if cfg.time_budget_s is not None:  # the budget covers the whole run: data preparation and loading too
        cfg.time_budget_s -= time.perf_counter() - started
    torch.manual_seed(cfg.seed)
    trainer = LoraFinetuner(base.model, data.token_shards, base.tokenizer.encode, cfg, args.deepspeed,
                            args.out, identity, evaluate=evaluator)
    result = trainer.run()
    if rank == 0:
        report(args, result, evaluator, started)
    dist.barrier()
    return 0


def _metadata(checkpoint: Path) -> dict:
    from lm.checkpoint import read_config

    return read_config(checkpoint)[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from lm.adapters.lora import AdapterError
    from lm.inference.synthesis_types import SynthesisError
    from lm.training.deepspeed_setup import DeepSpeedConfigError

    try:
        return run(args)
    except (SynthesisError, AdapterError, DeepSpeedConfigError, FileNotFoundError, ValueError) as err:
        hint = "" if args.verbose else " (run with -v for the traceback)"
        log.error("%s%s", err, hint, exc_info=args.verbose)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
