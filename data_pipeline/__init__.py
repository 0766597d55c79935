"""The data pipeline: speech and transcripts -> raw shards -> token shards -> training batches.

    data_pipeline.corpus      building a TTS corpus offline: synthetic voices (espeak-ng, flite, Kokoro),
                              the corpus recipe and the neural-voice gate
    data_pipeline.ingest      a corpus (folder / manifest / LJSpeech / LibriTTS) -> validated raw shards
    data_pipeline.alignment   which phone sounds at each codec frame: synthesiser timings, the forced aligner
    data_pipeline.tokens      raw shards -> token shards with one codec (and one codec per token folder)
    data_pipeline.loading     token shards -> `TTSBatch`es: the resumable loader, batching, hand-over
    data_pipeline.text        the transcripts' front end: normalisation, phonemes, the sentencepiece tokenizer
    data_pipeline.records     the on-disk shard schema and `TTSBatch`, shared by every stage
    data_pipeline.sharding    which shards a process owns (tokens and loading agree on it)
"""
