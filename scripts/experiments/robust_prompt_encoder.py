"""Experiment (README "Why real voices fail"): a channel-robust prompt encoder.

    python scripts/experiments/robust_prompt_encoder.py OUT STEPS LR [TAU] [ce|mse] [LEVELS]

The student is a copy of `models/codec_rvq16k`'s encoder, trained so that student(channel(x)) lands in the
codebook cells teacher(x) picks (`ce`: cross-entropy over the first LEVELS levels' nearest-code logits at
temperature TAU, residuals teacher-forced; `mse`: the teacher's clean latents), while a quarter of each batch
stays clean with a latent anchor (weight 10) so student(x) keeps teacher(x)'s codes. Quantizer and decoder are
untouched: the student's codes would decode with the same decoder and feed the same LM. Data: the classic
TTS corpus (data/tts_corpus/synth) and the FSDD digits of ../shared/speech. Measured: 600 steps at lr 1e-4
move the code-1 agreement on channel-perturbed crops only from 0.175 to 0.197 (mse) / 0.178 (ce, tau 10).
"""
import copy
import json
import sys
import time
from pathlib import Path

import torch

from codec.base import Codec
from codec.training.audio_pool import AudioPool
from codec.training.augment import AugmentConfig, augment

ROOT = Path(__file__).resolve().parents[2]
torch.manual_seed(0)
out, steps, lr = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
tau = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
mode = sys.argv[5] if len(sys.argv) > 5 else 'ce'
levels = int(sys.argv[6]) if len(sys.argv) > 6 else 4
out.mkdir(parents=True, exist_ok=True)
teacher = Codec.from_pretrained(ROOT / 'models/codec_rvq16k').eval()
for p in teacher.parameters():
    p.requires_grad_(False)
student = copy.deepcopy(teacher.encoder).train()
for p in student.parameters():
    p.requires_grad_(True)
sr = teacher.sample_rate
SOURCES = [(str(ROOT / 'data/tts_corpus/synth'), 4.0), (str(ROOT.parent / 'shared/speech/fsdd-test'), 1.0)]
pool = AudioPool(SOURCES, sr, torch.device('cpu'))
CH = AugmentConfig(speed_prob=0.0, eq_prob=0.7, reverb_prob=0.5, noise_prob=0.6, snr_db_range=(15.0, 45.0),
                   gain_db_range=(-20.0, 0.0))
books = [cb.detach() for cb in teacher.quantizer.codebooks]
proj_in = teacher.quantizer.project_in

def teacher_codes(z):
    return teacher._nearest_codes(z)

def code_loss(z_s, codes, tau, levels=4):
    """CE of the student's residual distances against the teacher's codes, level by level; the residual
    follows the teacher's codes (teacher forcing)."""
    r = proj_in(z_s.transpose(1, 2))  # [B,F,D]
    loss, acc = 0.0, []
    for q in range(levels):
        cb = books[q]
        logits = (r @ cb.t() - 0.5 * cb.pow(2).sum(-1)) / tau
        tgt = codes[:, q]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        loss = loss + ce * (1.0 if q == 0 else 0.5)
        acc.append((logits.argmax(-1) == tgt).float().mean().item())
        r = r - cb[tgt]
    return loss, acc

evalgen = torch.Generator().manual_seed(123)
ev_clean = pool.sample(48, sr * 2, evalgen)
ev_clean = ev_clean / ev_clean.abs().amax(-1, keepdim=True).clamp_min(1e-4) * 0.9
ev_aug = augment(ev_clean, sr, CH, torch.Generator().manual_seed(7))
with torch.no_grad():
    ev_codes = teacher_codes(teacher.encoder(ev_clean))
    base = teacher_codes(teacher.encoder(ev_aug))
def agreement(codes):
    return [round((codes[:, q] == ev_codes[:, q]).float().mean().item(), 3) for q in range(4)]


print('teacher on aug: agreement per level', agreement(base), flush=True)

def evaluate(step):
    student.eval()
    with torch.no_grad():
        c_clean = teacher_codes(student(ev_clean))
        c_aug = teacher_codes(student(ev_aug))
    student.train()
    rec = dict(step=step, clean=agreement(c_clean),
               aug=agreement(c_aug))
    print(json.dumps(rec), flush=True)
    return rec

opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
gen = torch.Generator().manual_seed(1)
evaluate(0)
t0 = time.time()
for step in range(1, steps + 1):
    x = pool.sample(16, int(sr * 1.5), gen)
    x = x / x.abs().amax(-1, keepdim=True).clamp_min(1e-4) * 0.9
    xa = augment(x, sr, CH, gen)
    with torch.no_grad():
        zt = teacher.encoder(x)
        codes = teacher_codes(zt)
    zs_clean, zs_aug = student(x[:4]), student(xa[4:])
    scale = zt.pow(2).mean()
    anchor = (zs_clean - zt[:4]).pow(2).mean() / scale
    if mode == 'mse':
        loss = (zs_aug - zt[4:]).pow(2).mean() / scale + 10 * anchor
        acc = []
    else:
        loss, acc = code_loss(zs_aug, codes[4:], tau, levels)
        loss = loss + 10 * anchor
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    for g in opt.param_groups:
        g['lr'] = lr * min(1.0, step / 50)
    opt.step()
    if step % 25 == 0:
        rate = (time.time() - t0) / step
        accs = [round(a, 3) for a in acc]
        print(f'step {step} loss {loss.item():.3f} acc {accs} {rate:.2f}s/step', flush=True)
    if step % 100 == 0 or step == steps:
        evaluate(step)
        torch.save(student.state_dict(), out / 'student.pt')
