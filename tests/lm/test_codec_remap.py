"""Moving an LM onto a new codec (lm/adapters/codec_remap.py): pairing real token shards, and a relabelled
codec giving back exactly the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.records import TokenMeta
from data_pipeline.tokens.token_shards import token_sample, write_tar
from lm.adapters.codec_remap import agreement, cooccurrence, remap_rows, remap_state
from lm.model.config import get_preset
from lm.model.model import TTSModel

K, Q = 32, 4


def write_tokens(folder: Path, clips: dict[str, np.ndarray], shard: str = "tokens-000000.tar") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for key, codes in clips.items():
        meta = TokenMeta(text="t", speaker="s", duration=codes.shape[1] / 50, sample_rate=16000,
                         source=key, codec="test", frame_rate=50.0, num_frames=codes.shape[1],
                         num_codebooks=codes.shape[0])
        samples.append(token_sample(key, codes, meta))
    write_tar(folder / shard, samples)


@pytest.fixture()
def relabelled(tmp_path) -> tuple[Path, Path, np.ndarray]:
    """Old tokens of 3 clips, and the same clips under a codec that only renames codes (one permutation a
    level): a remap must recover it exactly."""
    rng = np.random.default_rng(0)
    perms = np.stack([rng.permutation(K) for _ in range(Q)])
    old = {f"clip{i}": rng.integers(0, K, (Q, 200)).astype(np.int16) for i in range(3)}
    new = {k: np.stack([perms[q][c[q]] for q in range(Q)]).astype(np.int16) for k, c in old.items()}
    new["only_in_new"] = new["clip0"]  # unpaired keys are skipped
    write_tokens(tmp_path / "old", old)
    write_tokens(tmp_path / "new", new)
    return tmp_path / "old", tmp_path / "new", perms


def test_cooccurrence_pairs_clips_by_key_and_finds_a_relabelling(relabelled) -> None:
    old, new, perms = relabelled
    counts, paired = cooccurrence(old, new, Q, K)
    assert paired == 3 and counts.shape == (Q, K, K) and counts.sum() == Q * 3 * 200
    for q in range(Q):
        nonzero_new, nonzero_old = np.nonzero(counts[q])
        assert (perms[q][nonzero_old] == nonzero_new).all()  # every count sits on the permutation
    assert agreement(counts) == [1.0] * Q


def test_cooccurrence_refuses_folders_that_do_not_pair(tmp_path) -> None:
    write_tokens(tmp_path / "a", {"x": np.zeros((Q, 5), np.int16)})
    write_tokens(tmp_path / "b", {"y": np.zeros((Q, 5), np.int16)})
    with pytest.raises(ValueError, match="share no clip keys"):
        cooccurrence(tmp_path / "a", tmp_path / "b", Q, K)
    write_tokens(tmp_path / "c", {"x": np.zeros((Q, 5), np.int16)}, shard="tokens-000009.tar")
    with pytest.raises(FileNotFoundError, match="lacks a shard"):
        cooccurrence(tmp_path / "a", tmp_path / "c", Q, K)


def test_remap_rows_mixes_by_counts_and_fills_unseen_codes_with_the_mean() -> None:
    old = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    counts = np.array([[3, 1, 0], [0, 0, 0], [0, 0, 5]])
    new = remap_rows(old, counts)
    assert torch.allclose(new[0], torch.tensor([0.75, 0.25]))
    assert torch.allclose(new[1], old.mean(dim=0))
    assert torch.allclose(new[2], old[2])


def test_a_relabelled_codec_gives_back_the_same_model(relabelled, make_batch) -> None:
    """Old model on old codes == remapped model on the relabelled codes, logits permuted likewise."""
    old_dir, new_dir, perms = relabelled
    config = get_preset("tiny").replace(num_codebooks=Q, codebook_size=K)
    torch.manual_seed(0)
    old_model = TTSModel(config).eval()
    counts, _ = cooccurrence(old_dir, new_dir, Q, K)
    new_model = TTSModel(config).eval()
    new_model.load_state_dict(remap_state(old_model.state_dict(), counts, old_model.vocab.audio_offset, K))

    batch = make_batch(config, [5, 3], [9, 6], [4, 2])
    relabel = torch.from_numpy(perms).long()
    moved = make_batch(config, [5, 3], [9, 6], [4, 2])
    for name in ("codes", "prompt_codes"):
        codes = getattr(batch, name)
        setattr(moved, name, torch.stack([relabel[q][codes[:, q]] for q in range(Q)], dim=1))
    with torch.no_grad():
        before = old_model(old_model.build_batch(batch, generator=torch.Generator().manual_seed(1)))
        after = new_model(new_model.build_batch(moved, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(after.ar_logits[..., relabel[0]], before.ar_logits[..., :K], atol=1e-5)
    assert torch.allclose(after.ar_logits[..., K], before.ar_logits[..., K], atol=1e-5)  # <eos>
    stage = int(new_model.build_batch(moved, generator=torch.Generator().manual_seed(1)).nar.stage[0])
    assert torch.allclose(after.nar_logits[0][..., relabel[stage]], before.nar_logits[0], atol=1e-5)
    with torch.no_grad():  # the control: without the remap the relabelled codes mean something else
        unmoved = old_model(old_model.build_batch(moved, generator=torch.Generator().manual_seed(1)))
    assert not torch.allclose(unmoved.ar_logits[..., relabel[0]], before.ar_logits[..., :K], atol=1e-3)


def test_remap_script_writes_an_export_on_the_new_codec(relabelled, tmp_path) -> None:
    """scripts/remap_lm_codec.py end to end: real codec directories, token folders with their codec.json,
    an export that loads with the new codec copied in; token folders of the wrong codec are refused."""
    import importlib.util
    import json

    from codec.backends.rvq_codec import RVQCodec, RVQCodecConfig
    from codec.identity import codec_identity
    from lm.checkpoint import load_model, read_config
    from lm.training.export import export_inference_dir

    old_tokens, new_tokens, _ = relabelled
    codecs = {}
    for name, seed in (("codec_a", 0), ("codec_b", 1)):
        torch.manual_seed(seed)
        cfg = RVQCodecConfig(architecture="spectral", dimension=16, spectral_dim=32, encoder_layers=1,
                             decoder_layers=1, num_codebooks=Q, codebook_size=K, kmeans_init=False)
        codecs[name] = str(RVQCodec(cfg).save_pretrained(tmp_path / name, dtype=torch.float32))
    for folder, name in ((old_tokens, "codec_a"), (new_tokens, "codec_b")):  # what tokenize_shards.py writes
        record = {"spec": codecs[name], "identity": codec_identity(codecs[name])}
        (folder / "codec.json").write_text(json.dumps(record))
    config = get_preset("tiny").replace(num_codebooks=Q, codebook_size=K)
    torch.manual_seed(0)
    tokenizer = tmp_path / "tokenizer.model"
    tokenizer.write_bytes(b"not read by the remap")
    export_inference_dir(tmp_path / "lm", config, TTSModel(config).state_dict(), tokenizer, codecs["codec_a"],
                         metadata={"train_step": 123})

    spec = importlib.util.spec_from_file_location("remap_lm_codec", Path(__file__).resolve().parents[2]
                                                  / "scripts" / "remap_lm_codec.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # scripts/ is not a package
    args = ["--checkpoint", str(tmp_path / "lm"), "--out", str(tmp_path / "moved")]
    assert script.main([*args, "--old-tokens", str(old_tokens), "--new-tokens", str(new_tokens)]) == 0
    _, meta = read_config(tmp_path / "moved")
    assert meta["train_step"] == 123 and meta["codec_remapped_from"]["paired_clips"] == 3
    assert codec_identity(tmp_path / "moved" / meta["codec"]) == codec_identity(codecs["codec_b"])
    assert isinstance(load_model(tmp_path / "moved"), TTSModel)
    with pytest.raises(SystemExit):  # swapped: the "old" folder is not the model's codec's tokens
        script.main([*args, "--old-tokens", str(new_tokens), "--new-tokens", str(old_tokens)])
    assert json.loads((old_tokens / "codec.json").read_text())["spec"] == codecs["codec_a"]
