"""Items in shards, and shards as fingerprinted caches.

Items (videos, clips) map to shards by a hash of their id, so every stage that splits work
(ASR journals, leakage features, packing, evaluation features) agrees on the layout and a
fan-out part `--shards i/n` takes the shards s with s % n == i.

A fingerprinted array shard is one .npz written atomically once all its items are done,
carrying a fingerprint of everything its arrays depend on (weights, settings, code, the items
and their file stamps) and the items that could not be read, with the reason: a later run
reuses it only while the fingerprint matches, and never reads a half-written file.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvts.storage import atomic_path


def shard_of(item_id: str, num_shards: int) -> int:
    h = hashlib.blake2b(item_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % num_shards


def in_part(shard: int, part: tuple[int, int] | None) -> bool:
    """Whether shard `shard` belongs to part i of n (`--shards i/n`: shards s with s % n == i);
    every shard does when there is no part."""
    return part is None or shard % part[1] == part[0]


def shard_path(folder: str | Path, shard: int, num_shards: int) -> Path:
    return Path(folder) / f"shard-{shard:05d}-of-{num_shards:05d}.npz"


@dataclass
class ArrayShard:
    """What a fingerprinted shard holds: the ids of its items (one per row of the arrays, or
    per group of rows, as the writer defines), the items that failed and why, the arrays."""

    ids: list[str]
    failed: list[tuple[str, str]]
    arrays: dict[str, np.ndarray]


def save_array_shard(path: str | Path, fingerprint: str, ids: list[str],
                     failed: Iterable[tuple[str, str]], arrays: Mapping[str, np.ndarray],
                     ids_key: str = "ids") -> None:
    """Write the shard at once (atomic): a reader sees the old file or the whole new one."""
    buf = io.BytesIO()
    np.savez(buf, fingerprint=np.array(fingerprint), **{ids_key: np.array(ids, dtype=str)},
             failed=np.array([f"{k}\t{r}" for k, r in failed], dtype=str), **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_array_shard(path: str | Path, names: Iterable[str], fingerprint: str | None = None,
                     ids_key: str = "ids") -> ArrayShard | None:
    """The shard, or None when missing, unreadable, or made from other inputs (another
    fingerprint; None: any)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if fingerprint is not None and str(z["fingerprint"]) != fingerprint:
                return None
            failed = [tuple(s.split("\t", 1)) for s in z["failed"].tolist()]
            return ArrayShard(z[ids_key].tolist(), failed,  # type: ignore[arg-type]
                              {n: z[n] for n in names})
    except (OSError, ValueError, KeyError):
        return None


def remove_stale_shards(folder: str | Path, wanted: Iterable[str | Path]) -> None:
    """Delete the shard files of `folder` that this run did not ask for: a changed shard count
    leaves old files that must not count."""
    folder = Path(folder)
    keep = {Path(p) for p in wanted}
    for stale in folder.glob("shard-*.npz") if folder.exists() else []:
        if stale not in keep:
            stale.unlink()
