"""Experiment (README "Why real voices fail"): the unseen-sentence prompts cleaned up two ways, as new lists.

    python scripts/experiments/prompt_cleanup.py     # -> runs/gate/{gate,spec}.lst and their prompt wavs
    python scripts/evaluate.py --checkpoint models/default --list runs/gate/gate.lst --no-ground-truth \
        --temperature 0.3 --seed 1234 --out runs/gate/eval_gate_1234

gate: 10 ms frames more than 30 dB under the loud ones muted (dilated, smoothed); spec: spectral subtraction
of the quietest 10 % of STFT frames' mean power, floor -20 dB. Neither helped (capped WER 73.9 / 66.1 % vs
66.8 % as given, DNSMOS 2.15 / 2.14 vs 2.42).
"""
from pathlib import Path

import soundfile as sf
import torch

from codec.audio import load_audio, to_mono

ROOT = Path(__file__).resolve().parents[2]
LST = ROOT / 'evaluation/lists/unseen_sentences.lst'

def gate(w, sr, rng=30.0):
    hop = int(0.01 * sr)
    n = w.numel() // hop * hop
    fr = w[:n].reshape(-1, hop)
    p = 10 * torch.log10(fr.pow(2).mean(1).clamp_min(1e-12))
    loud = torch.quantile(p, 0.95)
    keep = (p > loud - rng).float()
    # dilate by 3 frames so onsets/offsets survive, then smooth
    keep = torch.nn.functional.max_pool1d(keep[None, None], 7, 1, 3)[0, 0]
    keep = torch.nn.functional.avg_pool1d(keep[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    g = keep.repeat_interleave(hop)
    out = w.clone()
    out[:n] *= g
    out[n:] *= g[-1]
    return out

def spectral(w, sr, strength=1.0, floor=0.1):
    n_fft, hop = 512, 128
    win = torch.hann_window(n_fft)
    X = torch.stft(w, n_fft, hop, window=win, return_complex=True)
    P = X.abs() ** 2
    e = P.sum(0)
    q = torch.quantile(e, 0.1)
    noise = P[:, e <= q].mean(1, keepdim=True)
    g = (1 - strength * noise / P.clamp_min(1e-12)).clamp_min(floor ** 2).sqrt()
    return torch.istft(X * g, n_fft, hop, window=win, length=w.numel())

variants = {'gate': gate, 'spec': spectral}
for name, fn in variants.items():
    out = ROOT / 'runs/gate' / name
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in LST.read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        f = line.split('|')
        src = (LST.parent / f[2]).resolve()
        dst = out / (Path(f[2]).stem + '.wav')
        if not dst.exists():
            w, sr = load_audio(src)
            w = to_mono(w)[0]
            sf.write(dst, fn(w, sr).numpy(), sr)
        f[2] = str(dst)
        lines.append('|'.join(f))
    (ROOT / f'runs/gate/{name}.lst').write_text('\n'.join(lines) + '\n')
    print(name, len(lines))
