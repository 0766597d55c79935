"""Token shards -> training batches. The resumable loader (loader.py), reading token shards
(token_reader.py), pairing, bucketing and collating utterances into `TTSBatch`es (batching.py), and
handing a loader's position over to another number of ranks or workers (handover.py)."""
