"""`ar_voice` through the real server (POST /v1/audio/speech): a model with house voices reads codebook 1 in
the one asked for (or the nearest, once per stored voice), a model without them takes only "prompt", and a
name it does not have is a 400 naming the field."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
from suite_helpers import build_tiny_export

from lm.inference.house_voices import HouseVoice, HouseVoices
from lm.inference.synthesizer import Synthesizer


def test_ar_voice_over_http(serve, tiny_synth, tmp_path) -> None:
    export = build_tiny_export(tmp_path / "export", alignment="phoneme")
    q = Synthesizer.from_pretrained(export).model.config.num_codebooks
    g = torch.Generator().manual_seed(0)
    voices = [HouseVoice(name, torch.randint(0, 1024, (q, 50), generator=g),
                         torch.nn.functional.normalize(torch.randn(256, generator=g), dim=0))
              for name in ("one", "two")]
    HouseVoices(voices).save(export)
    synth = Synthesizer.from_pretrained(export, max_seconds=10.0, temperature=0.0)
    served = serve(tmp_path / "voices", synth=synth)
    client = served.client

    def audio(**fields) -> np.ndarray:
        reply = client.speech(input="Two words.", voice="lj", seed=1, stream=False, **fields)
        assert reply.status == 200, reply.body[:300]
        return sf.read(io.BytesIO(reply.body), dtype="int16")[0]

    one, two, prompt = audio(ar_voice="one"), audio(ar_voice="two"), audio(ar_voice="prompt")
    assert not np.array_equal(one, two) and not np.array_equal(one, prompt)
    house = audio(ar_voice="house")
    nearest = served.voices.get("lj")._house  # chosen once for the stored voice, then reused
    assert nearest in ("one", "two") and np.array_equal(house, {"one": one, "two": two}[nearest])
    bad = client.speech(input="Hi.", voice="lj", ar_voice="nobody")
    assert bad.status == 400 and bad.error_code == "invalid_ar_voice"
    assert bad.json()["error"]["param"] == "ar_voice" and "'one', 'two'" in bad.json()["error"]["message"]

    plain = serve(tmp_path / "voices-plain", synth=tiny_synth).client  # no house voices
    refused = plain.speech(input="Hi.", voice="lj", ar_voice="house")
    assert refused.status == 400 and refused.error_code == "invalid_ar_voice"
    assert plain.speech(input="Hi.", voice="lj", ar_voice="prompt", stream=False).status == 200
