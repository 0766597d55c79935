"""Building a TTS corpus offline: the synthetic voices (synthetic_speech.py: espeak-ng, flite and Kokoro;
kokoro_voice.py: Kokoro-82M with mixed style vectors), the recipe that says who reads what
(corpus_recipe.py, configs/tts_corpus.yaml) and the build with its neural-voice gate (tts_corpus.py)."""
