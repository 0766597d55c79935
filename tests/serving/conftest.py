"""A tiny exported model served by the real stack (uvicorn on a loopback port, in a thread of the test
process), and a plain HTTP client for it. Each server gets its own engine and voices folder; the model is
loaded once for the whole directory."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from suite_helpers import build_tiny_export

from lm.inference.streaming import StreamConfig
from lm.inference.synthesizer import Synthesizer
from serving.app import BackgroundServer, ServerSettings, create_app
from serving.engine import SynthesisEngine
from serving.voices import BUILTIN_VOICES, VoiceStore

# two built-in voices are enough here, and each one is encoded when a server starts
TEST_BUILTINS = {k: BUILTIN_VOICES[k] for k in ("lj", "arctic-aew")}
# chunks of 0.1 s so that a 0.5 s sentence streams in several of them
TEST_STREAM = StreamConfig(first_chunk_seconds=0.1, nar_lookahead_seconds=0.1)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from more threads; set per module, so nothing leaks past this directory."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Synthesizer:
    """An untrained model never says <eos>: every sentence runs to max_seconds (0.5 s, 38 frames)."""
    export = build_tiny_export(tmp_path_factory.mktemp("serving") / "export")
    return Synthesizer.from_pretrained(export, max_seconds=0.5)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return self.json()["error"]["code"]


class Client:
    """Plain http.client requests, one connection each (what a curl user does)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def connection(self, timeout: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def settled_engine(self, timeout: float = 60.0) -> dict[str, Any]:
        """/health's engine numbers once nothing is active or waiting (a response ends with its last chunk,
        the engine's bookkeeping at the end of its round, a moment later)."""
        deadline = time.monotonic() + timeout
        while True:
            engine = self.get("/health").json()["engine"]
            if engine["active"] == engine["waiting"] == 0 or time.monotonic() > deadline:
                return engine
            time.sleep(0.05)

    def speech(self, **fields: Any) -> Reply:
        return self.request("POST", "/v1/audio/speech", json.dumps(fields).encode(),
                            {"Content-Type": "application/json"})

    def upload(self, data: bytes, filename: str = "voice.wav", **fields: str) -> Reply:
        boundary = "----codectts-test-boundary"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", "/v1/voices", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})


@dataclass
class Served:
    server: BackgroundServer
    client: Client
    engine: SynthesisEngine
    voices: VoiceStore


@pytest.fixture(scope="session")
def serve(tiny_synth) -> Iterator[Callable[..., Served]]:
    """serve(voices_dir, max_batch=..., max_waiting=..., synth=..., **settings) -> a running server (of
    `tiny_synth` unless another synthesizer is given; stopped at the end of the session, or by the caller
    through `served.server.__exit__`)."""
    running: list[BackgroundServer] = []

    def start(voices_dir: Path, max_batch: int = 4, max_waiting: int = 8, synth: Synthesizer | None = None,
              **settings: Any) -> Served:
        synth = synth or tiny_synth
        voices = VoiceStore(synth, voices_dir, builtins=TEST_BUILTINS)
        voices.load()
        engine = SynthesisEngine(synth, max_batch=max_batch, max_waiting=max_waiting)
        options = {"max_input_chars": 300, "max_upload_bytes": 2**20, "stream_config": TEST_STREAM,
                   **settings}
        server = BackgroundServer(create_app(synth, voices, engine, ServerSettings(**options)))
        running.append(server.__enter__())
        return Served(server, Client(server.host, server.port), engine, voices)

    yield start
    for server in running:
        server.__exit__(None, None, None)
