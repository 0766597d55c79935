"""Codec training audio: every clip of the sources in memory on the device, random crops by index math.

A source is "PATH[:WEIGHT]": a folder (searched recursively), a .tar raw shard or a folder of them, or one
audio file. Corrupt clips are logged and skipped, never fatal.

Shape letters: B batch, T samples.
"""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

import torch

from codec.audio import AudioReadError, load_audio, resample, to_mono

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".opus", ".mp3")


def _audio_items(path: Path):
    """Yield (name, bytes-or-path) for every audio file under a folder, a .tar shard or a file."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix.lower() == ".tar":
                yield from _audio_items(p)
            elif p.suffix.lower() in AUDIO_SUFFIXES and not p.stem.lower().endswith(".tmp"):
                yield str(p), p  # NAME.tmp.flac: a file another job is still writing
    elif path.suffix.lower() == ".tar":
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile() and Path(member.name).suffix.lower() in AUDIO_SUFFIXES:
                        yield f"{path}:{member.name}", tar.extractfile(member).read()
        except (tarfile.TarError, OSError) as e:
            log.warning("skipped shard %s: %s", path, e)
    elif path.is_file():
        yield str(path), path
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")


def load_clips(path: str | Path, sample_rate: int) -> list[torch.Tensor]:
    """Every readable clip under `path` as mono float32 [T] at `sample_rate`. Corrupt clips are logged and
    skipped (counted in the log), never fatal."""
    clips, bad = [], 0
    for name, src in _audio_items(Path(path)):
        try:
            wav, sr = load_audio(src, name=name)
        except AudioReadError as e:
            log.warning("skipped %s", e)
            bad += 1
            continue
        if wav.shape[-1] == 0:
            log.warning("skipped %s: empty audio", name)
            bad += 1
            continue
        clips.append(resample(to_mono(wav), sr, sample_rate)[0])
    if not clips:
        raise ValueError(f"{path}: no readable audio ({bad} unreadable)")
    log.info("%s: %d clips, %.1f min%s", path, len(clips), sum(c.numel() for c in clips) / sample_rate / 60,
             f", {bad} skipped" if bad else "")
    return clips


def parse_source(spec: str) -> tuple[str, float]:
    """'PATH:WEIGHT' -> (PATH, WEIGHT); a bare PATH weighs its duration in minutes' share (weight 1)."""
    path, sep, weight = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return spec, 1.0


class AudioPool:
    """All training audio on the device, one concatenated tensor per source; random crops by index math.

    Sources are drawn with probability proportional to their weight, then a crop uniformly over the
    source's audio (crops may span two clips: harmless for a codec and it keeps short clips usable).
    """

    def __init__(self, sources: list[tuple[str, float]], sample_rate: int, device: torch.device):
        self.sample_rate = sample_rate
        self.audio, weights, self.names = [], [], []
        for path, weight in sources:
            clips = load_clips(path, sample_rate)
            self.audio.append(torch.cat(clips).to(device))
            weights.append(weight)
            self.names.append(path)
        w = torch.tensor(weights, dtype=torch.float64)
        if (w <= 0).any():
            raise ValueError(f"source weights must be positive, got {weights}")
        self.probs = (w / w.sum()).to(device)
        self.seconds = [a.numel() / sample_rate for a in self.audio]

    def sample(self, batch: int, num_samples: int, gen: torch.Generator) -> torch.Tensor:
        """-> wav [B, 1, num_samples]."""
        device = self.probs.device
        which = torch.multinomial(self.probs, batch, replacement=True, generator=gen)
        out = torch.empty(batch, num_samples, device=device)
        offsets = torch.arange(num_samples, device=device)
        for s, audio in enumerate(self.audio):
            rows = torch.nonzero(which == s).flatten()
            if rows.numel() == 0:
                continue
            if audio.numel() <= num_samples:
                audio = torch.nn.functional.pad(audio, (0, num_samples + 1 - audio.numel()))
            high = audio.numel() - num_samples
            starts = torch.randint(0, high, (rows.numel(),), generator=gen, device=device)
            out[rows] = audio[starts[:, None] + offsets[None, :]]
        return out[:, None, :]

