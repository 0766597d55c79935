"""LoRA voice adapters: a speaker's recordings -> token shards, the fine-tuning loop, save / load / merge."""
