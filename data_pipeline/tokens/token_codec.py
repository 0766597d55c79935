"""One codec per token corpus: tokens of two codecs never meet in a folder, a training run or a warm start.

A token folder records the codec that filled it in `codec.json` (spec and identity, codec/identity.py);
tokenizing into it with another codec is refused. Every token sample also carries `extra.codec_identity`,
so a training run whose shards come from several folders can check them all (`check_one_codec`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from codec.identity import codec_identity

MARKER = "codec.json"


class CodecMismatchError(ValueError):
    """Tokens of two codecs would be mixed; the message names both and where they come from."""


def claim_token_folder(out_dir: str | Path, spec: str) -> str:
    """Check (or, for a new folder, write) `out_dir/codec.json`; -> the codec's identity."""
    out_dir = Path(out_dir)
    identity = codec_identity(spec)
    marker = out_dir / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except ValueError as e:
            raise CodecMismatchError(
                f"{marker}: unreadable ({e}); remove it only if you know which codec "
                f"made the shards in {out_dir}"
            ) from e
        if recorded.get("identity") != identity:
            raise CodecMismatchError(
                f"{out_dir} holds tokens of codec {recorded.get('spec')} ({recorded.get('identity')}); "
                f"this run uses {spec} ({identity}). Tokens of two codecs must not mix: tokenize into "
                f"another folder (or delete {out_dir} to start it over with this codec)"
            )
        return identity
    has_shards = any(out_dir.glob("*.tar"))
    if has_shards:
        raise CodecMismatchError(
            f"{out_dir} has token shards but no {MARKER}: which codec made them is "
            f"unknown; tokenize into a new folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(f".tmp{id(marker)}")
    tmp.write_text(json.dumps({"spec": spec, "identity": identity}, indent=1) + "\n")
    tmp.replace(marker)  # several ranks may write the same content; the last rename wins, all agree
    return identity


def sample_codec(meta: dict) -> str:
    """The codec a token sample was made with: its recorded identity. A sample from before identities
    were recorded has only its codec spec, which resolves to the identity of the checkpoint at that path
    today, so old and new shards of one unchanged codec train together (a named codec stays its spec)."""
    recorded = meta.get("extra", {}).get("codec_identity")
    if recorded:
        return str(recorded)
    return _identity_of_spec(str(meta.get("codec", "")))


@functools.lru_cache(maxsize=16)
def _identity_of_spec(spec: str) -> str:
    return codec_identity(spec) if spec else ""


def check_one_codec(codecs_by_shard: dict[str, str]) -> str:
    """shard -> codec of its first sample; all equal -> that codec, else an error naming two shards."""
    seen: dict[str, str] = {}
    for shard, codec in codecs_by_shard.items():
        seen.setdefault(codec, shard)
    if len(seen) > 1:
        (a, shard_a), (b, shard_b) = list(seen.items())[:2]
        raise CodecMismatchError(
            f"the training shards come from {len(seen)} codecs: {shard_a} has {a}, "
            f"{shard_b} has {b}; train on tokens of one codec"
        )
    return next(iter(seen), "")
