"""The HTTP server over `lm.inference.synthesizer.Synthesizer`: an OpenAI-compatible speech endpoint that
streams, saved voices, a web page, and a batching engine that lets concurrent requests share the AR batch.

    serving.engine   SynthesisEngine: a worker thread, a bounded queue, rounds of
                     `lm.inference.streaming.run_round`
    serving.voices   VoiceStore: voice prompts encoded once and cached on disk, built-in voices
    serving.formats  wav / flac / pcm encoders (whole files and streams)
    serving.app      create_app(): the FastAPI routes, error handling, upload limits
    serving.cli      `python scripts/serve.py` / `codectts-serve`
"""
