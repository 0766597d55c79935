"""`python scripts/serve.py` / `codectts-serve`: load a model once and serve it over HTTP (serving.app).

    python scripts/serve.py --checkpoint runs/demo/train/export --host 127.0.0.1 --port 8000
    curl -s localhost:8000/v1/audio/speech -H 'Content-Type: application/json' \\
        -d '{"input": "Hello there.", "voice": "lj"}' -o hello.wav
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
import uvicorn

from lm.inference.export_dir import DEFAULT_MODEL_DIR
from lm.inference.prompt_transcript import PromptTranscriber
from lm.inference.streaming import StreamConfig, decoder_context
from lm.inference.synthesis_types import SynthesisError
from lm.inference.synthesizer import Synthesizer
from serving.app import ServerSettings, create_app
from serving.engine import SynthesisEngine
from serving.voices import VoiceStore

log = logging.getLogger("serve")

DEFAULT_VOICES_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codectts" / "voices"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"exported model directory (default: {DEFAULT_MODEL_DIR})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--voices-dir", type=Path, default=DEFAULT_VOICES_DIR,
                   help="where uploaded voices (clip + codes) are kept across restarts")
    p.add_argument("--max-batch", type=int, default=8, help="requests that share one AR batch")
    p.add_argument("--max-waiting", type=int, default=16,
                   help="requests queued behind a full batch; more get 503 with Retry-After")
    p.add_argument("--join-wait-ms", type=float, default=50.0,
                   help="after requests end, wait this long for their clients' next ones to join the batch")
    p.add_argument("--max-input-chars", type=int, default=4096)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest voice upload")
    p.add_argument("--max-voice-seconds", type=float, default=30.0, help="longest voice clip")
    p.add_argument("--max-seconds", type=float, default=None, help="cap on the audio of one sentence")
    p.add_argument("--first-chunk-seconds", type=float, default=StreamConfig.first_chunk_seconds,
                   help="audio in the first streamed chunk of a sentence (later chunks double)")
    p.add_argument("--no-transcribe-uploads", action="store_true",
                   help="keep voices uploaded without a transcript in speaker-prompt mode (default: Whisper "
                        "tiny.en transcribes them and they continue their clip, which reads better)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    decode = {"max_seconds": args.max_seconds} if args.max_seconds else {}
    checkpoint = args.checkpoint or DEFAULT_MODEL_DIR
    try:
        synth = Synthesizer.from_pretrained(checkpoint, device=args.device, **decode)
    except SynthesisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    transcriber = None if args.no_transcribe_uploads else PromptTranscriber()
    voices = VoiceStore(synth, args.voices_dir, max_seconds=args.max_voice_seconds, transcriber=transcriber)
    voices.load()
    decoder_context(synth.codec)  # measured once now, not in the first request
    engine = SynthesisEngine(synth, max_batch=args.max_batch, max_waiting=args.max_waiting,
                             join_wait_seconds=args.join_wait_ms / 1000)
    settings = ServerSettings(max_input_chars=args.max_input_chars,
                              max_upload_bytes=int(args.max_upload_mb * 2**20),
                              model_name=Path(checkpoint).name,
                              stream_config=StreamConfig(first_chunk_seconds=args.first_chunk_seconds))
    app = create_app(synth, voices, engine, settings)
    log.info("serving %s on http://%s:%d (web page at /, API at /v1/audio/speech)", checkpoint, args.host,
             args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
