"""Neural audio codecs behind one interface: wav [B, C, T] <-> codes [B, Q, F].

    from codec import load_codec, load_audio
    codec = load_codec("encodec_24khz@6")        # or "encodec_24khz:random", or a checkpoint directory
    enc = codec.encode(wav, lengths, sample_rate)  # EncodedBatch(codes [B, Q, F], frame_lengths [B])
    wav = codec.decode(enc.codes)                  # [B, 1, F * hop_length]

    codec.base       the interface, `load_codec`, checkpoint directories, chunked encoding
    codec.audio      audio at the edge: read, down-mix, resample, pad
    codec.identity   which tokens a codec makes (a hash of its encoder and codebooks)
    codec.backends   the implementations: our RVQ codec (SEANet / spectral) and EnCodec
    codec.training   training our RVQ codec, and fine-tuning its decoder alone
"""

from codec.audio import AudioReadError, load_audio, pad_batch, resample, to_mono
from codec.base import Codec, EncodedBatch, codec_class, load_codec, register_codec

__all__ = [
    "AudioReadError", "Codec", "EncodedBatch", "codec_class", "load_audio", "load_codec", "pad_batch",
    "register_codec", "resample", "to_mono",
]
