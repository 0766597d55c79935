"""The FastAPI app: routes, request validation, upload limits and JSON errors.

    POST   /v1/audio/speech   OpenAI's fields (model, input, voice, response_format, speed) plus stream, seed,
                              temperature, prompt_text, ar_voice, candidates, judge -> wav / flac / pcm,
                              streamed or whole (a whole file keeps the best of N readings of every sentence)
    POST   /v1/voices         multipart: file (audio), text (transcript, optional), name (optional) -> {"id"}
    GET    /v1/voices         {"voices": [{"id", "name", "builtin", "seconds", "text", ...}]}
    GET    /v1/voices/{id}    one voice
    DELETE /v1/voices/{id}    remove a saved voice
    GET    /health            model, sample rate, queue
    GET    /                  the web page (serving/static/index.html)

Every error is JSON in OpenAI's shape, {"error": {"message", "type", "code", "param"}}, with a 4xx status for
bad input (400; 404 unknown route or voice id; 413 too large; 503 busy, with Retry-After) and 500 for a bug;
no request can end the server or another request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from lm.inference.streaming import AudioChunk, StreamConfig, StreamJob
from lm.inference.synthesis_types import MAX_CANDIDATES, MAX_SPEED, MIN_SPEED, SynthesisError, speed_options
from lm.inference.synthesizer import Synthesizer
from serving.engine import EngineFull, SynthesisEngine
from serving.formats import FORMATS, MEDIA_TYPES, STREAMABLE, encode_file, pcm16, wav_stream_header
from serving.voices import VoiceError, VoiceStore

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "index.html"


@dataclass
class ServerSettings:
    max_input_chars: int = 4096  # OpenAI's limit for `input`
    max_upload_bytes: int = 20 * 2**20  # a voice clip; checked before the body is read
    max_json_bytes: int = 2**20
    default_voice: str | None = None  # None: the first voice listed
    model_name: str = "codectts"
    # non-streamed responses wait for the NAR to see each whole sentence (the audio `synthesize` makes)
    stream_config: StreamConfig | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.headers = status, code, message, param, headers


def error_response(status: int, code: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech. Unknown fields are ignored, as OpenAI clients send some we do not use."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: str
    voice: str | None = None
    response_format: str = "wav"
    speed: float = 1.0
    stream: bool | None = None  # default: streamed for pcm, whole file for wav / flac
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    prompt_text: str | None = None  # the voice clip's transcript (continuation mode); "" for none
    ar_voice: str | None = None  # "prompt", "house" or a house voice's name (lm/inference/house_voices.py)
    # best of N (lm/inference/rerank.py) for whole-file responses; default: the model's (models/default: 4)
    candidates: int | None = Field(default=None, ge=1, le=MAX_CANDIDATES)
    # who picks among them: "phones" or "phones+words" (lm/inference/word_judge.py); default: the model's
    judge: Literal["phones", "phones+words"] | None = None


class _Channel:
    """Chunks from the engine's thread to the request's coroutine."""

    DONE = object()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, chunk: AudioChunk) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk)

    def finish(self, error: BaseException | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, error if error is not None else self.DONE)


def create_app(synth: Synthesizer, voices: VoiceStore, engine: SynthesisEngine,
               settings: ServerSettings | None = None) -> FastAPI:
    """The app; its lifespan starts and stops `engine`. `voices` must be loaded."""
    settings = settings or ServerSettings()
    page = PAGE.read_text()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    # no /docs: Swagger UI comes from a CDN, and the server may have no internet (/openapi.json stays)
    app = FastAPI(title="codectts", lifespan=lifespan, docs_url=None, redoc_url=None)

    # ---- errors -------------------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.message, e.param, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, "not_found" if e.status_code == 404 else "http_error",
                              str(e.detail), headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(400, "invalid_request", _describe(e.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"{type(e).__name__}: {e}")

    # ---- pages and status ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        cfg = synth.model.config
        return {"status": "ok", "model": settings.model_name, "sample_rate": synth.sample_rate,
                "alignment": cfg.alignment, "num_codebooks": cfg.num_codebooks,
                "voices": len(voices.list()), "engine": asdict(engine.stats())}

    # ---- voices -------------------------------------------------------------------------------------------
    @app.get("/v1/voices")
    async def list_voices() -> dict[str, Any]:
        return {"voices": [v.info(synth.sample_rate) for v in voices.list()]}

    @app.get("/v1/voices/{voice_id}")
    async def get_voice(voice_id: str) -> dict[str, Any]:
        voice = voices.get(voice_id)
        if voice is None:
            raise ApiError(404, "unknown_voice", f"no voice {voice_id!r}", "voice_id")
        return voice.info(synth.sample_rate)

    @app.delete("/v1/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> dict[str, Any]:
        try:
            deleted = voices.delete(voice_id)
        except VoiceError as e:
            raise ApiError(403, e.code, str(e), "voice_id") from e
        if not deleted:
            raise ApiError(404, "unknown_voice", f"no voice {voice_id!r}", "voice_id")
        return {"id": voice_id, "deleted": True}

    @app.post("/v1/voices", status_code=201)
    async def create_voice(request: Request) -> JSONResponse:
        form = await _read_form(request, settings.max_upload_bytes)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing_file", "send the audio as the multipart field 'file'", "file")
        name, text = form.get("name"), form.get("text")
        if not isinstance(name, str | None) or not isinstance(text, str | None):
            raise ApiError(400, "invalid_request", "'name' and 'text' must be plain form fields")
        data = await upload.read()
        try:
            voice = await run_in_threadpool(voices.add, data, name, text, upload.filename)
        except VoiceError as e:
            raise ApiError(400, e.code, str(e), "file") from e
        log.info("new voice %s (%r, %.1f s)", voice.id, voice.name, len(voice.audio) / synth.sample_rate)
        return JSONResponse(voice.info(synth.sample_rate), status_code=201)

    # ---- speech -------------------------------------------------------------------------------------------
    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        req = _parse_speech(await _read_json(request, settings.max_json_bytes))
        text = req.input.strip()
        if not text:
            raise ApiError(400, "empty_input", "'input' is empty: give the text to speak", "input")
        if len(req.input) > settings.max_input_chars:
            raise ApiError(400, "input_too_long", f"'input' has {len(req.input)} characters; the limit is "
                                                  f"{settings.max_input_chars}", "input")
        fmt = req.response_format.lower()
        if fmt not in FORMATS:
            raise ApiError(400, "unsupported_format", f"response_format {req.response_format!r} is not "
                                                      f"supported; use one of {list(FORMATS)}",
                           "response_format")
        stream = req.stream if req.stream is not None else fmt == "pcm"
        if stream and fmt not in STREAMABLE:
            raise ApiError(400, "unsupported_format", f"{fmt} cannot be streamed (its header holds the "
                                                      f"length); stream {' or '.join(STREAMABLE)}",
                           "response_format")
        if stream and req.candidates is not None and req.candidates > 1:
            raise ApiError(400, "unsupported_candidates",
                           "best of N needs finished readings: ask for a whole file (stream false) or "
                           "candidates 1", "candidates")
        if req.speed != 1.0 and not synth.phone_aligned:
            raise ApiError(400, "unsupported_speed", "this model speaks at its own pace: only speed 1.0 is "
                                                     "supported", "speed")
        if not MIN_SPEED <= req.speed <= MAX_SPEED:
            raise ApiError(400, "invalid_speed", f"speed must be in [{MIN_SPEED}, {MAX_SPEED}], got "
                                                 f"{req.speed}", "speed")
        voice_id = req.voice or settings.default_voice or next((v.id for v in voices.list()), None)
        stored = voices.get(voice_id) if voice_id else None
        if stored is None:
            known = [v.id for v in voices.list()]
            raise ApiError(400, "unknown_voice", f"unknown voice {voice_id!r}; known: {known} (add one with "
                                                 "POST /v1/voices)", "voice")
        decode = {"temperature": req.temperature} if req.temperature is not None else {}
        decode.update(speed_options(req.speed))
        if req.candidates is not None:
            decode["candidates"] = req.candidates
        if req.judge is not None:
            decode["judge"] = req.judge
        if req.ar_voice is not None:
            allowed = ["prompt", *(["house", *synth.house_voices.names] if synth.house_voices else [])]
            if req.ar_voice not in allowed:
                raise ApiError(400, "invalid_ar_voice", f"ar_voice {req.ar_voice!r}: this model takes one of "
                                                        f"{allowed}", "ar_voice")
            decode["ar_voice"] = req.ar_voice
        config = settings.stream_config if stream else StreamConfig(nar_lookahead_seconds=None)
        channel = _Channel(asyncio.get_running_loop())

        def plan() -> StreamJob:
            voice = voices.prompt(stored, req.prompt_text)
            return StreamJob(synth, text, voice, seed=req.seed, config=config, decode=decode,
                             sink=channel.put)

        try:
            job = await run_in_threadpool(plan)
        except SynthesisError as e:
            raise ApiError(400, "invalid_input", str(e), "input") from e
        try:
            engine.submit(job, channel.finish)
        except EngineFull as e:
            raise ApiError(503, "server_busy", str(e), headers={"Retry-After": str(e.retry_after)}) from e
        headers = {"X-Sample-Rate": str(synth.sample_rate), "X-Seed": str(job.seed), "X-Voice": stored.id,
                   "X-Sentences": str(len(job.rows)), "Cache-Control": "no-store"}
        log.info("speech: voice %s, %d sentence(s), %s%s, seed %d", stored.id, len(job.rows), fmt,
                 " streamed" if stream else "", job.seed)
        if stream:
            return StreamingResponse(_stream_body(engine, job, channel, fmt, synth.sample_rate),
                                     media_type=MEDIA_TYPES[fmt], headers=headers)
        wav = await _collect(engine, job, channel, request)
        body = await run_in_threadpool(encode_file, wav, synth.sample_rate, fmt)
        return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)

    return app


# ---- request bodies --------------------------------------------------------------------------------------
class _TooLarge(Exception):
    pass


def _check_declared_length(request: Request, limit: int, what: str) -> None:
    """Refuse a body whose Content-Length is over the limit before reading any of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}") from None
    if size > limit:
        raise ApiError(413, "too_large", f"the {what} is {size} bytes; the limit is {limit} bytes")


async def _read_form(request: Request, limit: int) -> FormData:
    """The multipart form, read only up to `limit` bytes: a declared length over it is refused at once, and
    a body without one (chunked) is cut off as soon as it passes the limit."""
    _check_declared_length(request, limit, "upload")
    received = 0

    async def capped_receive() -> dict[str, Any]:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _TooLarge()
        return message

    try:
        return await Request(request.scope, capped_receive).form(max_files=1, max_fields=8)
    except _TooLarge:
        raise ApiError(413, "too_large", f"the upload passed the limit of {limit} bytes") from None
    except (MultiPartException, StarletteHTTPException) as e:
        raise ApiError(400, "bad_multipart", f"cannot parse the multipart form: {_detail(e)}") from None


async def _read_json(request: Request, limit: int) -> Any:
    _check_declared_length(request, limit, "request body")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the request body passed the limit of {limit} bytes")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None


def _parse_speech(body: Any) -> SpeechRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", f"the body must be a JSON object, got {type(body).__name__}")
    try:
        return SpeechRequest.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]["loc"] if e.errors() else None
        raise ApiError(400, "invalid_request", _describe(e.errors()),
                       ".".join(map(str, first)) if first else None) from None


def _describe(errors: Any) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body') or 'body'}: "
                     f"{err.get('msg', 'invalid')}" for err in errors)


def _detail(e: Exception) -> str:
    return str(getattr(e, "detail", None) or getattr(e, "message", None) or e)


# ---- responses -------------------------------------------------------------------------------------------
async def _stream_body(engine: SynthesisEngine, job: StreamJob, channel: _Channel, fmt: str,
                       sample_rate: int) -> AsyncIterator[bytes]:
    """The audio as it is made. A client that goes away cancels the generator, and that cancels the job.

    The response ends with the utterance's last chunk, not when the engine's round ends (other rows may still
    be running): a client's next request then arrives in time to join the next round."""
    header = wav_stream_header(sample_rate) if fmt == "wav" else b""
    complete = False
    try:
        while (item := await channel.queue.get()) is not channel.DONE:
            if isinstance(item, BaseException):
                # the status line is out: break the connection before the chunked body's last chunk, so the
                # client sees a cut response (a clean end would pass for complete audio)
                raise RuntimeError(f"synthesis failed mid-stream: {type(item).__name__}: {item}") from item
            # the header leaves with the first audio, so the first body byte means the first sound
            yield header + pcm16(item.wav)
            header = b""
            if item.last:
                complete = True
                return
    finally:
        if not complete:
            engine.cancel(job)  # frees the slot of a job whose client left


async def _collect(engine: SynthesisEngine, job: StreamJob, channel: _Channel,
                   request: Request) -> np.ndarray:
    """The whole utterance, for a non-streamed response (up to its last chunk); checks every second whether
    the client left."""
    parts: list[np.ndarray] = []
    while True:
        try:
            item = await asyncio.wait_for(channel.queue.get(), timeout=1.0)
        except asyncio.TimeoutError:  # noqa: UP041 - a distinct class on Python 3.10
            if await request.is_disconnected():
                engine.cancel(job)
                raise ApiError(499, "client_closed", "the client closed the connection") from None
            continue
        if item is channel.DONE:
            break
        if isinstance(item, SynthesisError):
            raise ApiError(400, "invalid_input", str(item), "input")
        if isinstance(item, BaseException):
            raise ApiError(500, "synthesis_failed", f"synthesis failed: {type(item).__name__}: {item}")
        parts.append(item.wav)
        if item.last:  # done: no need to wait for the end of the engine's round
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


# ---- running it ------------------------------------------------------------------------------------------
class BackgroundServer:
    """uvicorn serving `app` from a thread on an already-bound loopback socket (port 0: the OS picks a free
    one, so nothing can take it between choosing and binding): tests, benchmarks, notebooks."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_level=log_level, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()
