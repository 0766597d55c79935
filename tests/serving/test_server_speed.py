"""OpenAI's `speed` on a phone-aligned model, through the real server: the lengths are given before decoding
(flite's durations at the voice's pace, divided by speed), so speed 2 returns a quarter of the audio of
speed 0.5 (plus the fixed 0.1 s at each end); out of range is a 400 naming the field."""

from __future__ import annotations

import io

import soundfile as sf
from suite_helpers import build_tiny_export

from lm.inference.synthesizer import Synthesizer


def test_speed_shortens_a_phone_aligned_models_speech(serve, tmp_path) -> None:
    synth = Synthesizer.from_pretrained(build_tiny_export(tmp_path / "export", alignment="phoneme"),
                                        max_seconds=10.0)
    client = serve(tmp_path / "voices", synth=synth).client
    lengths = {}
    for speed in (0.5, 2.0):
        reply = client.speech(input="Two words and three more.", voice="lj", seed=1, speed=speed,
                              stream=False)
        assert reply.status == 200, reply.body[:300]
        lengths[speed] = len(sf.read(io.BytesIO(reply.body))[0])
    assert 0.25 < lengths[2.0] / lengths[0.5] < 0.35, lengths
    slow = client.speech(input="Hi.", voice="lj", speed=0.1)
    assert slow.status == 400 and slow.json()["error"]["param"] == "speed"
    assert slow.error_code == "invalid_speed"
