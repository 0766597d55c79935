"""Tokenize: raw shards -> token shards. The run (tokenize.py) and its settings (config.py), one shard
encoded with one codec (shard_tokenizer.py), the token shard format (token_shards.py) and the rule of one
codec per token corpus (token_codec.py)."""
