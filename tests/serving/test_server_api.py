"""The HTTP API over real loopback connections: formats, streaming, voices, and every kind of bad input (each
answered with a 4xx JSON error while the server goes on serving)."""

from __future__ import annotations

import io
import json
import logging
import re
import select
import socket
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from suite_helpers import SPEECH

from lm.inference.streaming import StreamConfig
from serving.voices import CODES_FILE

CLIP = SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_axb_a0005.wav"  # 1.6 s, 16 kHz
TEXT = "Hello there, how are you. This is the second sentence."


@pytest.fixture(scope="module")
def served(serve, tmp_path_factory):
    return serve(tmp_path_factory.mktemp("voices"))


@pytest.fixture(scope="module")
def client(served):
    return served.client


@pytest.fixture(autouse=True)
def server_stays_up(client):
    """Whatever a test sent, the server answers the next request."""
    yield
    reply = client.get("/health")
    assert reply.status == 200 and reply.json()["status"] == "ok"


def pcm_samples(data: bytes) -> np.ndarray:
    assert len(data) % 2 == 0
    return np.frombuffer(data, dtype="<i2")


def wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    return samples, rate


def raw_exchange(client, head: bytes, body_parts, wait_first: float = 0.0) -> bytes:
    """Send a request by hand: the headers, then body parts from an iterator, stopping as soon as the server
    has answered (so nothing of a huge body is made or held beyond one part). Returns the whole answer."""
    with socket.create_connection((client.host, client.port), timeout=60) as sock:
        sock.sendall(head)
        select.select([sock], [], [], wait_first)  # a server that refuses on the headers answers now
        for part in body_parts:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
            head_end = answer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = re.search(rb"content-length: *(\d+)", answer[:head_end].lower())
                if length and len(answer) >= head_end + 4 + int(length.group(1)):
                    break
        return answer


def dechunk(data: bytes) -> list[bytes]:
    """The chunks of an HTTP/1.1 chunked body, as the server sent them."""
    chunks, rest = [], data
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2:]
    return chunks


# ---- health, page ----------------------------------------------------------------------------------------
def test_health_page_and_unknown_routes(client, tiny_synth) -> None:
    health = client.get("/health").json()
    assert health["sample_rate"] == tiny_synth.sample_rate and health["voices"] == 2
    assert health["engine"]["max_batch"] == 4
    page = client.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"<audio" in page.body and b"/v1/audio/speech" in page.body
    assert b"://" not in page.body and b'src="//' not in page.body  # nothing from another host (no CDN)
    missing = client.get("/v1/nothing")
    assert missing.status == 404 and missing.error_code == "not_found"


# ---- speech ----------------------------------------------------------------------------------------------
def test_every_format_whole_and_streamed(client, tiny_synth) -> None:
    rate = tiny_synth.sample_rate
    wav = client.speech(input=TEXT, voice="lj", seed=3)
    assert wav.status == 200 and wav.headers["content-type"] == "audio/wav"
    assert "content-length" in wav.headers and wav.headers["x-seed"] == "3"
    samples, got_rate = wav_samples(wav.body)
    assert got_rate == rate and len(samples) > 0
    with wave.open(io.BytesIO(wav.body)) as w:  # a standard WAV, not only soundfile's reading of it
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, rate)
    flac = client.speech(input=TEXT, voice="lj", seed=3, response_format="flac")
    flac_samples, _ = sf.read(io.BytesIO(flac.body), dtype="int16")
    np.testing.assert_array_equal(flac_samples, samples)  # lossless
    whole_pcm = client.speech(input=TEXT, voice="lj", seed=3, response_format="pcm", stream=False)
    np.testing.assert_array_equal(pcm_samples(whole_pcm.body), samples)
    # streamed (pcm streams by default): the chunked NAR, same length; a streamed WAV carries the same samples
    pcm = client.speech(input=TEXT, voice="lj", seed=3, response_format="pcm")
    assert pcm.headers.get("transfer-encoding") == "chunked" and "content-length" not in pcm.headers
    assert len(pcm_samples(pcm.body)) == len(samples)
    streamed_wav = client.speech(input=TEXT, voice="lj", seed=3, stream=True)
    streamed, _ = wav_samples(streamed_wav.body)
    np.testing.assert_array_equal(streamed, pcm_samples(pcm.body))


def test_a_whole_response_is_the_librarys_audio(client, served, tiny_synth) -> None:
    reply = client.speech(input=TEXT, voice="arctic-aew", seed=8, temperature=0.7)
    voice = served.voices.prompt(served.voices.get("arctic-aew"))
    chunks = tiny_synth.stream(TEXT, voice=voice, seed=8, temperature=0.7,
                               stream_config=StreamConfig(nar_lookahead_seconds=None))
    expected = np.concatenate([c.wav for c in chunks])
    samples, _ = wav_samples(reply.body)
    np.testing.assert_allclose(samples / 32767.0, expected, atol=1.5 / 32767)


def test_a_whole_response_keeps_the_best_of_n_readings(client, served, tiny_synth) -> None:
    fields = {"input": TEXT, "voice": "arctic-aew", "seed": 8, "temperature": 0.7, "stream": False}
    reply = client.speech(candidates=3, **fields)
    assert reply.status == 200, reply.body[:300]
    voice = served.voices.prompt(served.voices.get("arctic-aew"))
    chunks = list(tiny_synth.stream(TEXT, voice=voice, seed=8, temperature=0.7, candidates=3,
                                    stream_config=StreamConfig(nar_lookahead_seconds=None)))
    assert [c.piece for c in chunks] == [0, 1]  # each sentence whole: the kept one of three readings
    samples, _ = wav_samples(reply.body)
    np.testing.assert_allclose(samples / 32767.0, np.concatenate([c.wav for c in chunks]), atol=1.5 / 32767)
    one, _ = wav_samples(client.speech(candidates=1, **fields).body)
    assert not np.array_equal(one, samples)


def test_a_whole_response_can_be_judged_by_phones_and_words(client, caplog) -> None:
    fields = {"input": "Good morning.", "voice": "arctic-aew", "seed": 8, "temperature": 0.7, "stream": False,
              "candidates": 2}
    with caplog.at_level(logging.INFO, logger="lm.inference.rerank"):
        reply = client.speech(judge="phones+words", **fields)
    assert reply.status == 200, reply.body[:300]
    assert wav_samples(reply.body)[0].size > 0
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("best of 2")]
    assert len(logged) == 1 and "; word error rates " in logged[0]  # Whisper base heard both readings


def test_streamed_audio_leaves_in_several_pieces(client) -> None:
    head = (b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n")
    body = b'{"input": "%s", "voice": "lj", "response_format": "pcm", "seed": 1}' % TEXT.encode()
    with socket.create_connection((client.host, client.port), timeout=60) as sock:
        sock.sendall(head % len(body) + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header, payload = data.split(b"\r\n\r\n", 1)
    assert header.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in header.lower()
    pieces = dechunk(payload)
    # one HTTP chunk per audio chunk: two sentences of 38 frames in chunks of 8, 16, ... frames
    assert len(pieces) >= 4 and all(len(p) % 2 == 0 for p in pieces)


# ---- voices ----------------------------------------------------------------------------------------------
def test_voices_upload_list_use_survive_a_restart_and_delete(serve, client, served, tmp_path) -> None:
    listed = client.get("/v1/voices").json()["voices"]
    assert [v["id"] for v in listed] == ["lj", "arctic-aew"] and all(v["builtin"] for v in listed)
    created = client.upload(CLIP.read_bytes(), "will.wav", name="Will", text="Will we ever forget it.")
    assert created.status == 201, created.body
    voice = created.json()
    assert voice["id"].startswith("v-") and voice["name"] == "Will" and abs(voice["seconds"] - 1.565) < 0.01
    assert client.get(f"/v1/voices/{voice['id']}").json()["text"] == "Will we ever forget it."
    assert voice["id"] in [v["id"] for v in client.get("/v1/voices").json()["voices"]]
    spoken = client.speech(input="In my own voice now, please.", voice=voice["id"], seed=1)
    assert spoken.status == 200 and len(wav_samples(spoken.body)[0]) > 0

    # a restart: a new server over the same folder finds the voice, codes read back (not encoded again)
    folder = served.voices.directory / voice["id"]
    stamp = (folder / CODES_FILE).stat().st_mtime_ns
    restarted = serve(served.voices.directory)
    again = restarted.voices.get(voice["id"])
    assert again is not None and again.name == "Will" and again.text == "Will we ever forget it."
    assert (again.codes == served.voices.get(voice["id"]).codes).all()
    assert (folder / CODES_FILE).stat().st_mtime_ns == stamp
    restarted.server.__exit__(None, None, None)

    deleted = client.request("DELETE", f"/v1/voices/{voice['id']}")
    assert deleted.json() == {"id": voice["id"], "deleted": True}
    assert not folder.exists()
    assert client.get(f"/v1/voices/{voice['id']}").status == 404
    assert client.request("DELETE", f"/v1/voices/{voice['id']}").status == 404
    builtin = client.request("DELETE", "/v1/voices/lj")
    assert builtin.status == 403 and builtin.error_code == "builtin_voice"
    gone = client.speech(input="Hello.", voice=voice["id"])
    assert gone.status == 400 and gone.error_code == "unknown_voice"


# ---- bad input: one test each ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text(client, text) -> None:
    reply = client.speech(input=text, voice="lj")
    assert reply.status == 400 and reply.error_code == "empty_input"
    assert reply.json()["error"]["param"] == "input"


def test_text_over_the_limit(client) -> None:
    reply = client.speech(input="word " * 100, voice="lj")  # the test server allows 300 characters
    assert reply.status == 400 and reply.error_code == "input_too_long"
    assert "300" in reply.json()["error"]["message"]


def test_unknown_voice(client) -> None:
    reply = client.speech(input="Hello.", voice="nobody")
    assert reply.status == 400 and reply.error_code == "unknown_voice"
    assert "lj" in reply.json()["error"]["message"]  # the known voices are named


@pytest.mark.parametrize("fields", [{"response_format": "mp3"}, {"response_format": "flac", "stream": True}])
def test_unsupported_format(client, fields) -> None:
    reply = client.speech(input="Hello.", voice="lj", **fields)
    assert reply.status == 400 and reply.error_code == "unsupported_format"


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b'{"input": "unterminated'])
def test_invalid_json(client, body) -> None:
    reply = client.request("POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
    assert reply.status == 400 and reply.error_code == "invalid_json"


@pytest.mark.parametrize("fields, param", [
    ([1, 2], None), ({"voice": "lj"}, "input"), ({"input": 5}, "input"),
    ({"input": "Hi.", "seed": -1}, "seed"), ({"input": "Hi.", "temperature": "hot"}, "temperature"),
    ({"input": "Hi.", "speed": 2.0}, "speed"), ({"input": "Hi.", "speed": 5.0}, "speed"),
    ({"input": "Hi.", "candidates": 0}, "candidates"), ({"input": "Hi.", "candidates": 17}, "candidates"),
    ({"input": "Hi.", "candidates": 3, "stream": True, "response_format": "pcm"}, "candidates"),
    ({"input": "Hi.", "judge": "whisper"}, "judge"),
])
def test_wrong_fields(client, fields, param) -> None:
    reply = client.request("POST", "/v1/audio/speech", json.dumps(fields).encode(),
                           {"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json()["error"]["param"] == param, reply.body


def test_non_audio_upload(client) -> None:
    reply = client.upload(b"this is a text file, not audio\n" * 100, "notes.wav")
    assert reply.status == 400 and reply.error_code == "not_audio"


def test_upload_without_a_file_field(client) -> None:
    assert client.upload(b"", "x.wav").status == 400  # an empty file is no audio either
    reply = client.request("POST", "/v1/voices", b'{"file": "x"}', {"Content-Type": "application/json"})
    assert reply.status == 400 and reply.error_code == "missing_file"


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_a_tenth_of_a_second_upload(client) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, tone(0.1, 16000), 16000, format="WAV")
    reply = client.upload(buffer.getvalue(), "short.wav")
    assert reply.status == 400 and reply.error_code == "audio_too_short"


def test_a_ten_minute_upload(client) -> None:
    buffer = io.BytesIO()  # 10 minutes of silence: FLAC makes it a few kB, under the size cap
    sf.write(buffer, np.zeros(600 * 8000, dtype=np.int16), 8000, format="FLAC")
    assert len(buffer.getvalue()) < 2**20
    reply = client.upload(buffer.getvalue(), "long.flac")
    assert reply.status == 400 and reply.error_code == "audio_too_long"


def test_a_300_mb_upload_is_refused_before_its_body_is_read(client) -> None:
    declared = 300 * 2**20
    head = (b"POST /v1/voices HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % declared)
    parts = (b"\0" * 65536 for _ in range(declared // 65536))  # made one at a time, as they are sent
    answer = raw_exchange(client, head, parts, wait_first=5.0)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer


def test_an_upload_of_unknown_length_is_cut_off_at_the_limit(client) -> None:
    head = (b"POST /v1/voices HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (65536, b"\1" * 65536)
    parts = [b"%x\r\n%s\r\n" % (len(piece), piece), *(chunk for _ in range(4 * 16))]  # 4 MB, the cap is 1
    answer = raw_exchange(client, head, iter(parts))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_deleting_unknown_voices_and_bad_paths(client) -> None:
    assert client.request("DELETE", "/v1/voices/nobody").status == 404
    assert client.request("PUT", "/v1/voices").status == 405


def test_a_voice_upload_survives_an_odd_name(client, served) -> None:
    created = client.upload(CLIP.read_bytes(), "../../etc/passwd", name="x" * 500)
    assert created.status == 201
    voice = created.json()
    assert len(voice["name"]) == 100 and (served.voices.directory / voice["id"]).is_dir()
    assert client.request("DELETE", f"/v1/voices/{voice['id']}").status == 200


def test_voice_files_stay_inside_the_voices_folder(served) -> None:
    folder: Path = served.voices.directory
    assert all(p.parent == folder for p in folder.iterdir())
