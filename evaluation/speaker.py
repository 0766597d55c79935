"""Speaker similarity: cosine of resemblyzer (GE2E d-vector) embeddings.

The encoder lives in lm/inference/speaker_embedding.py (synthesis picks house voices with it); this module
keeps evaluation's import path.
"""

from lm.inference.speaker_embedding import MIN_SECONDS, SPEAKER_SAMPLE_RATE, SpeakerEncoder, cosine

__all__ = ["MIN_SECONDS", "SPEAKER_SAMPLE_RATE", "SpeakerEncoder", "cosine"]
