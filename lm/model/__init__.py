"""The TTS model and its inputs: configs, the token vocabulary, sequence layouts and batches, the AR decoder,
the NAR head and the training losses."""
