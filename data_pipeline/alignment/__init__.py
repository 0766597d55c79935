"""Which phone sounds at each codec frame: exact synthesiser timings (engines.py), the forced aligner
(aligner.py + features.py + model.py + viterbi.py, trained by training.py on synthetic_set.py), the G2P
(g2p.py), the phone inventory (phones.py), the on-disk schema (schema.py) and boundary scoring
(scoring.py)."""
