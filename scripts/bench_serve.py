#!/usr/bin/env python
"""Load test of the HTTP server: start scripts/serve.py on loopback, run N concurrent clients at each
concurrency level, and print requests/s, latency to the first and the last byte, and audio seconds served per
wall second, with the ratio against concurrency 1 measured in the same run.

    python scripts/bench_serve.py --checkpoint runs/demo/train/export            # concurrency 1, 4, 16
    python scripts/bench_serve.py --concurrency 1 4 --requests-per-client 4 --max-seconds 1.5

Every request is a streamed WAV (`"stream": true`); each response must be complete (the chunked body's last
chunk arrived) and valid audio (soundfile reads it, the header matches, the samples are finite and not
empty), or the run fails. Clients send their next request as soon as the last one ends (closed loop), so
concurrency c keeps c requests in the server. The first request (not timed) warms the server up.

An untrained model never says <eos>: --max-seconds caps every sentence, which makes requests comparable.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April."


@dataclass
class Outcome:
    ok: bool
    first_byte: float = math.nan  # seconds from sending the request
    last_byte: float = math.nan
    audio_seconds: float = 0.0
    error: str = ""


@dataclass
class Level:
    concurrency: int
    wall: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def good(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    def percentile(self, attribute: str, q: float) -> float:
        values = [getattr(o, attribute) for o in self.good]
        return float(np.percentile(values, q)) if values else math.nan

    @property
    def audio_per_wall(self) -> float:
        return sum(o.audio_seconds for o in self.good) / self.wall


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="export directory (default: models/default, else runs/demo/train/export)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests-per-client", type=int, default=3,
                   help="requests each client sends one after another (at least 8 per level in all)")
    p.add_argument("--max-level-seconds", type=float, default=300.0,
                   help="no new request starts after this long in one level")
    p.add_argument("--text", default=DEFAULT_TEXT)
    p.add_argument("--voice", default="lj")
    p.add_argument("--max-seconds", type=float, default=1.5, help="server: cap on the audio of a sentence")
    p.add_argument("--max-batch", type=int, default=16, help="server: requests sharing one AR batch")
    p.add_argument("--threads", type=int, default=1, help="server: torch CPU threads")
    p.add_argument("--timeout", type=float, default=600.0, help="per request")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def default_checkpoint() -> Path:
    for candidate in (ROOT / "models" / "default", ROOT / "runs" / "demo" / "train" / "export"):
        if (candidate / "config.json").is_file():
            return candidate
    raise SystemExit("no model: pass --checkpoint DIR, or run `make demo-pipeline` (runs/demo/train/export)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, checkpoint: Path, voices_dir: str) -> tuple[subprocess.Popen, int]:
    """scripts/serve.py in its own process (the clients' Python threads must not share its interpreter)."""
    for _ in range(3):  # another process may take the port between choosing and binding it
        port = free_port()
        cmd = [sys.executable, str(ROOT / "scripts" / "serve.py"), "--checkpoint", str(checkpoint),
               "--host", "127.0.0.1", "--port", str(port), "--voices-dir", voices_dir,
               "--max-batch", str(args.max_batch), "--max-waiting", str(max(args.concurrency)),
               "--max-seconds", str(args.max_seconds), "--threads", str(args.threads),
               "--log-level", "warning"]
        server = subprocess.Popen(cmd, cwd=ROOT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return server, port
            except OSError:
                time.sleep(0.5)
        server.kill()
        server.wait()
    raise SystemExit("the server did not start (see its output above)")


def speak(port: int, body: bytes, timeout: float) -> Outcome:
    """One streamed WAV request: time to the first and the last body byte, and the checks of the audio."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            return Outcome(False, error=f"HTTP {response.status}: {response.read()[:200]!r}")
        first = response.read1(65536)  # the first piece of the body (read1: whatever has arrived)
        first_byte = time.perf_counter() - start
        data = first + response.read()  # http.client raises IncompleteRead on a cut chunked body
        last_byte = time.perf_counter() - start
    except (OSError, http.client.HTTPException) as e:
        return Outcome(False, error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        return Outcome(False, error=f"not valid WAV: {e}")
    if rate != int(response.getheader("X-Sample-Rate", "0")) or samples.ndim != 1 or not len(samples):
        return Outcome(False, error=f"wrong audio: {rate} Hz, shape {samples.shape}")
    if (len(data) - 44) != 2 * len(samples) or not np.isfinite(samples).all():
        return Outcome(False, error="truncated or corrupt samples")
    return Outcome(True, first_byte, last_byte, len(samples) / rate)


def run_level(port: int, concurrency: int, args: argparse.Namespace, body: bytes) -> Level:
    per_client = max(args.requests_per_client, math.ceil(8 / concurrency))
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.max_level_seconds

    def client() -> None:
        for _ in range(per_client):
            if time.perf_counter() > stop_at:
                return
            outcome = speak(port, body, args.timeout)
            with lock:
                outcomes.append(outcome)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Level(concurrency, time.perf_counter() - start, outcomes)


def table(levels: list[Level]) -> str:
    base = levels[0].audio_per_wall if levels and levels[0].concurrency == 1 else math.nan
    head = (f"{'conc':>4} {'reqs':>5} {'ok':>4} {'req/s':>6} {'TTFB p50':>9} {'TTFB p95':>9} {'last p50':>9} "
            f"{'last p95':>9} {'audio s/wall s':>15} {'vs conc 1':>10}")
    lines = [head, "-" * len(head)]
    for lv in levels:
        lines.append(
            f"{lv.concurrency:>4} {len(lv.outcomes):>5} {len(lv.good):>4} {len(lv.good) / lv.wall:>6.2f} "
            f"{lv.percentile('first_byte', 50):>8.2f}s {lv.percentile('first_byte', 95):>8.2f}s "
            f"{lv.percentile('last_byte', 50):>8.2f}s {lv.percentile('last_byte', 95):>8.2f}s "
            f"{lv.audio_per_wall:>15.2f} {lv.audio_per_wall / base:>9.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoint = args.checkpoint or default_checkpoint()
    body = json.dumps({"input": args.text, "voice": args.voice, "response_format": "wav", "stream": True,
                       "seed": 0}).encode()
    print(f"model {checkpoint}; {os.cpu_count()} CPU cores; text {args.text!r}; "
          f"sentences capped at {args.max_seconds} s", flush=True)
    with tempfile.TemporaryDirectory() as voices_dir:
        server, port = start_server(args, checkpoint, voices_dir)
        try:
            warm = speak(port, body, args.timeout)
            if not warm.ok:
                raise SystemExit(f"the warm-up request failed: {warm.error}")
            levels = []
            for concurrency in args.concurrency:
                level = run_level(port, concurrency, args, body)
                levels.append(level)
                print(f"concurrency {concurrency}: {len(level.good)}/{len(level.outcomes)} ok in "
                      f"{level.wall:.1f} s", flush=True)
        finally:
            server.terminate()
            server.wait(60)
    print()
    print(table(levels))
    failures = [(lv.concurrency, o.error) for lv in levels for o in lv.outcomes if not o.ok]
    for concurrency, error in failures:
        print(f"FAILED at concurrency {concurrency}: {error}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([{
            "concurrency": lv.concurrency, "requests": len(lv.outcomes), "ok": len(lv.good),
            "wall_s": lv.wall,
            "req_per_s": len(lv.good) / lv.wall, "ttfb_p50_s": lv.percentile("first_byte", 50),
            "ttfb_p95_s": lv.percentile("first_byte", 95), "last_p50_s": lv.percentile("last_byte", 50),
            "last_p95_s": lv.percentile("last_byte", 95), "audio_s_per_wall_s": lv.audio_per_wall,
        } for lv in levels], indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
