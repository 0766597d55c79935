"""Training with DeepSpeed: the config, the trainer loop, validation and metrics, checkpoints, resume
(exact, at another number of ranks, warm start from an export) and the inference export."""
