"""The transcripts' front end: English normalisation (normalize.py), the espeak-ng phoneme front end
(phonemes.py), the sentencepiece tokenizer (tokenizer.py) and the text it is trained on
(training_text.py)."""
