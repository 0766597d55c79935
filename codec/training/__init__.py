"""Training our RVQ codec: the loop (trainer.py) with its audio (audio_pool.py), augmentation (augment.py),
losses (losses.py), held-out STOI (held_out.py) and run checkpoints (checkpoint.py); and the decoder-only
fine-tune against an STFT discriminator (decoder_finetune.py, discriminator.py)."""
