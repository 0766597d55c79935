"""The codec-token language model: text + a voice prompt's codes -> the codes of new speech.

    lm.model        the network and what it reads: configs, vocabulary, sequence layouts, AR + NAR, losses
    lm.checkpoint   an inference model directory (safetensors + config.json): save / load
    lm.training     the DeepSpeed trainer, its config, checkpoints, resume and the export
    lm.adapters     LoRA voice adapters: the voice's data, fine-tuning, loading
    lm.inference    generation (AR loop over the KV cache, NAR passes), the Synthesizer, streaming

Imports go one way: model <- checkpoint <- training <- adapters <- inference.
"""
