"""The codec backends behind `codec.base.Codec`: our trainable RVQ codec (rvq_codec.py, with the SEANet
convolutions of seanet.py or the STFT encoder / decoder of spectral.py) and Meta's EnCodec
(encodec_codec.py). `codec.base` imports them lazily, by backend name."""
