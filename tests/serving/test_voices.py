"""The voice store on disk: codes are reused across restarts only when the same codec made them."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from suite_helpers import SPEECH

from serving.voices import CODES_FILE, VoiceStore

CLIP = SPEECH / "cmu-arctic-sample" / "cmu_arctic_us_axb_a0005.wav"


def test_a_voice_saved_by_another_codec_is_encoded_again(tiny_synth, tmp_path) -> None:
    store = VoiceStore(tiny_synth, tmp_path, builtins={})
    store.load()
    voice = store.add(CLIP.read_bytes(), name="Will")
    codes_file = tmp_path / voice.id / CODES_FILE
    # what a server with another codec would have left: other codes, another fingerprint
    save_file({"codes": torch.zeros_like(voice.codes)}, str(codes_file), metadata={"codec": "another-codec"})

    restarted = VoiceStore(tiny_synth, tmp_path, builtins={})
    restarted.load()
    again = restarted.get(voice.id)
    assert again is not None and torch.equal(again.codes, voice.codes)  # from the clip, not the stale file
    with safe_open(str(codes_file), framework="pt") as f:  # and the file is made right for the next start
        assert f.metadata()["codec"] != "another-codec" and torch.equal(f.get_tensor("codes"), voice.codes)


def test_a_speaker_prompt_uses_the_clips_last_seconds_and_a_transcript_all_of_it(tiny_synth) -> None:
    store = VoiceStore(tiny_synth, None, builtins={})
    voice = store.add(CLIP.read_bytes(), text="Will we ever forget it.")
    assert store.prompt(voice).prompt_text == "Will we ever forget it."  # the saved transcript: continuation
    assert torch.equal(store.prompt(voice).codes, voice.codes)
    speaker = store.prompt(voice, prompt_text="")  # "" asks for speaker-prompt mode
    frames = round(tiny_synth.defaults.max_prompt_seconds * tiny_synth.codec.frame_rate)
    assert speaker.prompt_text is None and torch.equal(speaker.codes, voice.codes[:, -frames:])


def test_an_upload_without_a_transcript_gets_whispers_and_it_survives_a_restart(tiny_synth, tmp_path) -> None:
    from lm.inference.prompt_transcript import PromptTranscriber

    store = VoiceStore(tiny_synth, tmp_path, builtins={}, transcriber=PromptTranscriber(cpu_threads=1))
    voice = store.add(CLIP.read_bytes(), name="Will")  # "Will we ever forget it."
    assert voice.text is not None and "forget it" in voice.text.lower()
    assert store.prompt(voice).prompt_text == voice.text  # continuation mode by default
    given = store.add(CLIP.read_bytes(), text="Will we ever forget it")
    assert given.text == "Will we ever forget it"  # a transcript given is kept as given
    restarted = VoiceStore(tiny_synth, tmp_path, builtins={})
    restarted.load()
    assert restarted.get(voice.id).text == voice.text
    plain = VoiceStore(tiny_synth, None, builtins={})  # no transcriber: speaker-prompt mode as before
    assert plain.add(CLIP.read_bytes()).text is None
