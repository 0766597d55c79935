"""Concurrency: requests share the AR batch, the queue is bounded (503 + Retry-After, never a hang), and a
client that goes away mid-stream frees its slot for the next one."""

from __future__ import annotations

import http.client
import io
import json
import math
import socket
import threading

import numpy as np
import pytest
import soundfile as sf
from suite_helpers import SPEECH

from lm.inference.streaming import AudioChunk, StreamConfig, StreamJob
from serving.engine import EngineFull, SynthesisEngine

PROMPT = SPEECH / "ljspeech-sample" / "LJ001-0002.wav"
TWO_SENTENCES = "Hello there, how are you. This is the second sentence."
# an untrained model speaks every sentence for max_seconds (0.5 s): six of them keep a request busy
LONG = " ".join(f"Sentence number {n} is right here." for n in range(1, 7))


@pytest.fixture(scope="module")
def voice(tiny_synth):
    wav, rate = sf.read(PROMPT, dtype="float32")
    return tiny_synth.encode_voice(wav, rate)


def run_engine_jobs(engine: SynthesisEngine, jobs: list[StreamJob]) -> dict[int, BaseException | None]:
    """Submit every job, then start the worker, and wait for all of them to finish."""
    ended: dict[int, BaseException | None] = {}
    all_done = threading.Event()

    def finished(i: int, error: BaseException | None) -> None:
        ended[i] = error
        if len(ended) == len(jobs):
            all_done.set()

    for i, job in enumerate(jobs):
        engine.submit(job, lambda error, i=i: finished(i, error))
    engine.start()
    try:
        assert all_done.wait(300), "the engine did not finish its jobs"
    finally:
        engine.stop()
    return ended


def test_jobs_that_arrive_together_share_one_ar_batch_and_match_lone_runs(tiny_synth, voice) -> None:
    """Greedy rows generate the same codes alone or in a batch: batching changes the speed, not the audio."""
    config = StreamConfig(first_chunk_seconds=0.1, nar_lookahead_seconds=0.1)
    texts = [TWO_SENTENCES, "A single sentence of mine here.", TWO_SENTENCES.replace("Hello", "Goodbye")]
    chunks: list[list[AudioChunk]] = [[] for _ in texts]
    jobs = [StreamJob(tiny_synth, t, voice, seed=i, config=config, decode={"temperature": 0.0},
                      sink=chunks[i].append) for i, t in enumerate(texts)]
    engine = SynthesisEngine(tiny_synth, max_batch=4, max_waiting=0)
    assert run_engine_jobs(engine, jobs) == {0: None, 1: None, 2: None}
    stats = engine.stats()
    assert stats.largest_round == 3 and stats.rounds == 2 and stats.completed == 3  # 2 pieces at most
    for text, got in zip(texts, chunks, strict=True):
        alone = list(tiny_synth.stream(text, voice=voice, temperature=0.0, stream_config=config))
        assert got[-1].last and [c.piece for c in got] == [c.piece for c in alone]
        np.testing.assert_allclose(np.concatenate([c.wav for c in got]),
                                   np.concatenate([c.wav for c in alone]), rtol=0, atol=1e-4)


def test_a_full_engine_refuses_and_a_cancelled_waiter_leaves_at_once(tiny_synth, voice) -> None:
    engine = SynthesisEngine(tiny_synth, max_batch=1, max_waiting=1)  # not started: nothing runs
    ended = []
    first, second, third = (StreamJob(tiny_synth, "Hello there, my friend.", voice) for _ in range(3))
    engine.submit(first, ended.append)
    engine.submit(second, ended.append)
    with pytest.raises(EngineFull) as full:
        engine.submit(third, ended.append)
    assert full.value.retry_after >= 1
    engine.cancel(second)
    assert ended == [None] and engine.stats().waiting == 1  # only `first` is left
    engine.submit(third, ended.append)  # the freed place is usable at once
    engine.stop()


# ---- over HTTP -------------------------------------------------------------------------------------------
def speech_body(text: str, **fields) -> bytes:
    return json.dumps({"input": text, "voice": "lj", **fields}).encode()


def open_stream(client, text: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = client.connection()
    conn.request("POST", "/v1/audio/speech", speech_body(text, response_format="pcm"),
                 {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def test_requests_that_arrive_while_one_runs_join_its_batch(serve, tmp_path, tiny_synth) -> None:
    served = serve(tmp_path / "voices", max_batch=4)
    client = served.client
    conn, first = open_stream(client, LONG)
    assert first.status == 200 and first.read1(2)  # its audio is flowing: its rounds are running
    replies: list = [None] * 3
    threads = [threading.Thread(target=lambda i=i: replies.__setitem__(i, client.speech(
        input=TWO_SENTENCES, voice="lj", seed=i))) for i in range(3)]
    for t in threads:
        t.start()
    rest = first.read()
    for t in threads:
        t.join()
    conn.close()
    frames = math.ceil(0.5 * tiny_synth.codec.frame_rate)  # max_seconds
    gap = int(round(tiny_synth.defaults.pause_seconds * tiny_synth.sample_rate))
    assert (2 + len(rest)) // 2 == 6 * frames * tiny_synth.codec.hop_length + 5 * gap  # all of it
    for reply in replies:
        samples, _ = sf.read(io.BytesIO(reply.body), dtype="int16")
        assert reply.status == 200 and len(samples) == 2 * frames * tiny_synth.codec.hop_length + gap
    engine = client.settled_engine()
    assert engine["largest_round"] >= 2 and engine["completed"] == 4  # they shared the long one's batch
    served.server.__exit__(None, None, None)


def test_a_full_queue_answers_503_and_a_client_that_leaves_frees_its_slot(serve, tmp_path,
                                                                          tiny_synth) -> None:
    served = serve(tmp_path / "voices", max_batch=1, max_waiting=1)
    client = served.client
    # A: a long stream, read a little, then abandoned
    leaver = socket.create_connection((client.host, client.port), timeout=60)
    body = speech_body(LONG, response_format="pcm")
    leaver.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    received = b""
    while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < 8:
        received += leaver.recv(4096)  # A is the active job now
    # B: queued behind A (its headers come back at once; its audio waits)
    waiter_conn, waiter = open_stream(client, TWO_SENTENCES)
    assert waiter.status == 200
    # C: no slot, no queue place
    busy = client.speech(input="Is there room for me?", voice="lj")
    assert busy.status == 503 and busy.error_code == "server_busy"
    assert int(busy.headers["retry-after"]) >= 1
    health = client.get("/health")  # the server still answers
    assert health.status == 200 and health.json()["engine"]["waiting"] == 1
    leaver.close()  # A goes away mid-stream: its row stops, B gets the slot
    audio = waiter.read()
    waiter_conn.close()
    frames = math.ceil(0.5 * tiny_synth.codec.frame_rate)  # max_seconds
    gap = int(round(tiny_synth.defaults.pause_seconds * tiny_synth.sample_rate))
    assert len(audio) // 2 == 2 * frames * tiny_synth.codec.hop_length + gap  # B is complete
    assert client.speech(input="Now there is room.", voice="lj").status == 200
    engine = client.settled_engine()
    assert engine["cancelled"] == 1 and engine["completed"] == 2
    assert engine["active"] == engine["waiting"] == 0
    served.server.__exit__(None, None, None)
