"""Inference: sampling, the AR decode loop over the static KV cache and the NAR passes (gpt-fast style), the
`Synthesizer` (text + voice prompt -> waveform) and streaming synthesis."""
