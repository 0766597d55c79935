"""Ingest: a corpus -> validated raw shards. The corpus layouts (sources.py, with manifest tables in
manifest.py and transcript checks in transcripts.py), the run's settings (config.py), the checks and the
lossless FLAC encoding of one item (validate.py), the size-bounded shard writer (shard_writer.py) and the
run itself (ingest.py)."""
