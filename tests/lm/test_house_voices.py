"""House voices (lm/inference/house_voices.py): the AR reads a training voice's prompt, the NAR the user's.
The bank's file round trip, the nearest-voice choice with the real speaker encoder on real clips, the AR/NAR
split in `generate` (exactly as if each had been given that prompt), the Synthesizer's `ar_voice` option,
and scripts/make_house_voices.py on real token shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_pipeline.records import TokenMeta
from data_pipeline.tokens.token_codec import MARKER
from data_pipeline.tokens.token_shards import token_sample, write_tar
from lm.inference.generate import TTSRequest, generate
from lm.inference.house_voices import HOUSE_VOICES_FILE, HouseVoice, HouseVoices
from lm.inference.nar_pass import generate_nar
from lm.inference.sampling import SamplingConfig
from lm.inference.speaker_embedding import SpeakerEncoder
from lm.inference.synthesis_types import SynthesisError
from lm.inference.synthesizer import Synthesizer
from lm.model.config import ModelConfig
from lm.model.model import TTSModel
from tests.suite_helpers import SPEECH, TINY_CODEC_SPEC, build_tiny_export

ROOT = Path(__file__).resolve().parents[2]

LJ = sorted((SPEECH / "ljspeech-sample").glob("*.wav"))
AEW = sorted((SPEECH / "cmu-arctic-sample").glob("*aew*.wav"))


def _voice(name: str, q: int, frames: int, seed: int, text: str | None = None) -> HouseVoice:
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(256, generator=g), dim=0)
    phones = torch.randint(1, 20, (frames,), generator=g) if text else None
    return HouseVoice(name, torch.randint(0, 64, (q, frames), generator=g), emb, text, phones)


def test_the_bank_round_trips_and_refuses_bad_files(tmp_path) -> None:
    bank = HouseVoices([_voice("crop", 4, 30, 0), _voice("whole", 4, 25, 1, text="a whole utterance")])
    bank.save(tmp_path)
    back = HouseVoices.load(tmp_path)
    assert back is not None and back.names == ["crop", "whole"]
    for a, b in zip(bank.voices, back.voices, strict=True):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.embedding, b.embedding) and a.text == b.text
    assert back.get("crop").phones is None and torch.equal(back.get("whole").phones, bank.get("whole").phones)
    with pytest.raises(KeyError, match="no house voice 'other'"):
        back.get("other")
    assert HouseVoices.load(tmp_path / "nowhere") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / HOUSE_VOICES_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="bad/house_voices.safetensors: not a house voice bank"):
        HouseVoices.load(tmp_path / "bad")
    with pytest.raises(ValueError, match="repeat"):
        HouseVoices([_voice("a", 4, 5, 0), _voice("a", 4, 5, 1)])
    no_phones = _voice("t", 4, 5, 0, text="words")
    no_phones.phones = None
    with pytest.raises(ValueError, match="needs the phone of every frame"):
        HouseVoices([no_phones]).save(tmp_path)


def test_nearest_picks_the_prompts_speaker_on_real_clips() -> None:
    """Embeddings of one LJ Speech clip and one CMU ARCTIC (aew) clip; other clips of each pick their own."""
    encoder = SpeakerEncoder()

    def emb(path: Path) -> torch.Tensor:
        wav, rate = sf.read(path, dtype="float32")
        return torch.from_numpy(encoder.embed(wav, rate))

    bank = HouseVoices([HouseVoice("lj", torch.zeros(4, 5, dtype=torch.long), emb(LJ[0])),
                        HouseVoice("aew", torch.zeros(4, 5, dtype=torch.long), emb(AEW[0]))])
    for path, speaker in ((LJ[1], "lj"), (LJ[2], "lj"), (AEW[1], "aew"), (AEW[2], "aew")):
        wav, rate = sf.read(path, dtype="float32")
        assert bank.nearest(wav, rate).name == speaker, path.name
    assert bank.nearest(np.zeros(16000, dtype=np.float32), 16000).name == "lj"  # silence: the first voice


@pytest.fixture()
def phone_model(phone_config: ModelConfig) -> TTSModel:
    torch.manual_seed(0)
    return TTSModel(phone_config).eval()


def test_the_ar_reads_the_house_voice_and_the_nar_the_users_prompt(phone_model: TTSModel) -> None:
    """cb1 of a request with ar_prompt_codes = cb1 of the same request whose prompt is the house voice, in
    speaker-prompt and in continuation mode; codebooks 2..Q = the NAR run on that cb1 with the user's
    prompt."""
    q = phone_model.config.num_codebooks
    g = torch.Generator().manual_seed(1)
    text = torch.randint(3, 60, (9,), generator=g)
    phones = torch.randint(1, 20, (6,), generator=g)
    durations = torch.tensor([2, 3, 1, 2, 2, 3])
    user = torch.randint(0, 64, (q, 40), generator=g)
    house = torch.randint(0, 64, (q, 30), generator=g)
    house_text = torch.randint(3, 60, (5,), generator=g)
    house_phones = torch.randint(1, 20, (30,), generator=g)
    greedy = SamplingConfig(temperature=0.0, max_phone_frames=4)
    for text_ids, frame_phones in ((None, None), (house_text, house_phones)):
        split = generate(phone_model, [TTSRequest(text, user, phone_ids=phones, phone_durations=durations,
                                                  ar_prompt_codes=house, ar_prompt_text_ids=text_ids,
                                                  ar_prompt_phones=frame_phones)], greedy)
        as_house = generate(phone_model, [TTSRequest(text, house, text_ids, phones, frame_phones, durations)],
                            greedy)
        n = int(split.frame_lengths[0])
        assert n == int(durations.sum()) == int(as_house.frame_lengths[0])
        assert torch.equal(split.codes[0, 0, :n], as_house.codes[0, 0, :n])
        nar = generate_nar(phone_model, text[None], torch.tensor([9]), user[None], torch.tensor([40]),
                           split.codes[:, :1, :n], torch.tensor([n]), 0.0, None,
                           frame_phones=torch.repeat_interleave(phones, durations)[None])
        assert torch.equal(split.codes[0, :, :n], nar[0, :, :n])
        assert not torch.equal(split.codes[0, 1:, :n], as_house.codes[0, 1:, :n])  # the NAR read the user


@pytest.fixture(scope="module")
def aligned_export(tmp_path_factory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("house") / "export", alignment="phoneme")


def test_synthesizer_ar_voice_option(aligned_export: Path, tmp_path, capsys) -> None:
    wav, rate = sf.read(LJ[0], dtype="float32")
    plain = Synthesizer.from_pretrained(aligned_export, temperature=0.0)
    with pytest.raises(SynthesisError, match="house_voices.safetensors"):
        plain.synthesize("Hello there.", wav, rate, ar_voice="house")
    q = plain.model.config.num_codebooks
    bank_dir = tmp_path / "export"
    import shutil

    shutil.copytree(aligned_export, bank_dir)
    shutil.copy(aligned_export.with_name(aligned_export.name + "-text.model"), tmp_path)
    encoder = SpeakerEncoder()
    voices = []
    for name, path in (("aew", AEW[0]), ("lj", LJ[1])):
        codes = plain.encode_voice(*sf.read(path, dtype="float32")).codes[:q, :60]
        decoded = plain.codec.decode(codes[None])[0, 0].detach().numpy()
        voices.append(HouseVoice(name, codes, torch.from_numpy(encoder.embed(decoded, plain.sample_rate))))
    HouseVoices(voices).save(bank_dir)
    synth = Synthesizer.from_pretrained(bank_dir, temperature=0.0)
    assert synth.house_voices is not None and synth.house_voices.names == ["aew", "lj"]
    voice = synth.encode_voice(wav, rate)
    assert synth.nearest_house_voice(voice.codes) in ("aew", "lj")
    by_name = {n: synth.synthesize("Hello there.", wav, rate, ar_voice=n, seed=0).wav for n in ("aew", "lj")}
    assert not np.array_equal(by_name["aew"], by_name["lj"])
    result = synth.synthesize("Hello there.", wav, rate, ar_voice="house", seed=0)
    house = result.wav
    assert result.house_voice == synth.nearest_house_voice(voice.codes)
    assert np.array_equal(house, by_name[result.house_voice])
    assert f"AR voice     {result.house_voice} (house voice" in result.summary()
    assert not np.array_equal(house, synth.synthesize("Hello there.", wav, rate, seed=0).wav)  # "prompt"
    with pytest.raises(SynthesisError, match=r"no house voice 'nobody'; this model has \['aew', 'lj'\]"):
        synth.synthesize("Hello there.", wav, rate, ar_voice="nobody")
    with pytest.raises(SynthesisError, match="ar_voice must be"):
        synth.synthesize("Hello there.", wav, rate, ar_voice="")

    # generate.py --ar-voice
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_script", ROOT / "scripts" / "generate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--prompt-audio", str(LJ[0]), "--text", "Hello there.", "--seed", "0", "--speaker-prompt",
              "--temperature", "0", "--threads", "1", "--out", str(tmp_path / "g.wav")]
    assert script.main(["--checkpoint", str(bank_dir), "--ar-voice", "lj", *common]) == 0
    assert "AR voice     lj (house voice" in capsys.readouterr().out
    assert script.main(["--checkpoint", str(aligned_export), "--ar-voice", "house", *common]) == 2
    assert "needs house voices" in capsys.readouterr().err


def test_make_house_voices_script_writes_the_bank_from_token_shards(aligned_export: Path, tmp_path) -> None:
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import make_house_voices

    export = tmp_path / "export"
    shutil.copytree(aligned_export, export)
    shutil.copy(aligned_export.with_name(aligned_export.name + "-text.model"), tmp_path)
    synth = Synthesizer.from_pretrained(export)
    q, rate = synth.model.config.num_codebooks, synth.codec.frame_rate
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    samples, frames = [], []
    for i, (speaker, path) in enumerate((("aew", AEW[0]), ("lj", LJ[0]), ("lj", LJ[1]))):
        wav, sr = sf.read(path, dtype="float32")
        codes = synth.encode_voice(wav, sr, max_prompt_seconds=30).codes.numpy().astype(np.int16)
        f = codes.shape[1]
        frames.append(f)
        meta = TokenMeta(text=f"clip {i}", speaker=speaker, duration=f / rate, sample_rate=16000,
                         source=path.name, codec=TINY_CODEC_SPEC, frame_rate=rate, num_frames=f,
                         num_codebooks=q)
        align = json.dumps({"phone_ids": [1, 2, 3], "frame_durations": [f // 3, f // 3, f - 2 * (f // 3)]})
        samples.append(token_sample(f"k{i}", codes, meta, align.encode()))
    write_tar(tokens / "tokens-000000.tar", samples)
    (tokens / MARKER).write_text(json.dumps({"spec": TINY_CODEC_SPEC, "identity": TINY_CODEC_SPEC}))
    assert make_house_voices.main(["--export", str(export), "--tokens", str(tokens), "--voices", "lj", "aew",
                                   "--seconds", "1", "--offset-seconds", "0.5", "--default"]) == 0
    bank = HouseVoices.load(export)
    assert bank.names == ["lj", "aew"] and bank.get("lj").codes.shape == (q, round(rate))
    assert bank.get("lj").text is None
    assert json.loads((export / "config.json").read_text())["metadata"]["decode"]["ar_voice"] == "house"
    assert Synthesizer.from_pretrained(export).defaults.ar_voice == "house"
    # whole utterances: the first clip of each voice that fits, with its transcript and frame phones
    assert make_house_voices.main(["--export", str(export), "--tokens", str(tokens), "--voices", "lj",
                                   "--seconds", str(frames[1] / rate), "--whole-utterance"]) == 0
    lj = HouseVoices.load(export).get("lj")
    assert lj.text == "clip 1" and lj.phones.shape == lj.codes.shape[1:] and int(lj.phones[0]) == 1
    (tokens / MARKER).write_text(json.dumps({"spec": "other", "identity": "other"}))
    with pytest.raises(SystemExit, match="another codec's tokens"):
        make_house_voices.main(["--export", str(export), "--tokens", str(tokens), "--voices", "lj"])


def test_a_house_voice_streams_as_it_synthesizes(aligned_export: Path, tmp_path) -> None:
    """stream() with ar_voice set gives synthesize()'s waveform (whole-sentence NAR), and not the prompt's."""
    import shutil

    from lm.inference.streaming import StreamConfig

    export = tmp_path / "export"
    shutil.copytree(aligned_export, export)
    shutil.copy(aligned_export.with_name(aligned_export.name + "-text.model"), tmp_path)
    q = Synthesizer.from_pretrained(export).model.config.num_codebooks
    g = torch.Generator().manual_seed(3)
    HouseVoices([HouseVoice("one", torch.randint(0, 1024, (q, 40), generator=g), torch.ones(256) / 16)]
                ).save(export)
    synth = Synthesizer.from_pretrained(export, max_seconds=0.6)
    wav, rate = sf.read(LJ[0], dtype="float32")
    text = "Two words. And three more."
    one_shot = synth.synthesize(text, wav, rate, seed=4, temperature=0.8, ar_voice="one")
    exact = StreamConfig(first_chunk_seconds=0.1, nar_lookahead_seconds=None)  # whole-sentence NAR
    chunks = list(synth.stream(text, wav, rate, seed=4, temperature=0.8, ar_voice="one", stream_config=exact))
    streamed = np.concatenate([c.wav for c in chunks])
    assert streamed.shape == one_shot.wav.shape
    np.testing.assert_allclose(streamed, one_shot.wav, rtol=0, atol=1e-4)
    own = synth.synthesize(text, wav, rate, seed=4, temperature=0.8, ar_voice="prompt").wav
    assert own.shape != one_shot.wav.shape or not np.allclose(own, one_shot.wav, atol=1e-3)
