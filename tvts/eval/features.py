"""Frozen-encoder features of a downstream set, extracted once and cached in shards.

Each clip is decoded once (T temporal x S spatial views, VideoMAE's multi-view test) and every
encoder that still needs the clip runs on the decoded views: decoding, not the encoder, is the
cost on a CPU, so several encoders share one decode. Per encoder a shard is one .npz written
atomically with a fingerprint of the encoder's weights, the code that computes the arrays
(tvts.provenance), the view settings, the batch and device, and the shard's items
(ids, paths, file size and mtime): a rerun reuses every matching shard, an interrupted run redoes
only unfinished shards, and new clips redo only the shards they land in (the dedup stage's
pattern). A clip that cannot be decoded is recorded with its reason.

Per clip and view: the [CLS] output, the mean of the patch tokens, the projected video vector
(the contrastive space, for text-to-video retrieval) and the patch tokens, each slice's grid
average-pooled to at most `token_grid` a side (for the attentive probe), in float16.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tvts.data.labelled import LabelledClips, LabelledItem
from tvts.data.transforms import normalize
from tvts.provenance import code_digest, model_modules
from tvts.sharding import (
    in_part,
    load_array_shard,
    remove_stale_shards,
    save_array_shard,
    shard_of,
    shard_path,
)

ARRAYS = ("cls", "mean", "vec", "tokens")


@dataclass(frozen=True)
class ViewSpec:
    frames: int
    frame_size: int
    resize_short: int
    decoder: str
    temporal: int = 1
    spatial: int = 1
    token_grid: int = 4

    @property
    def views(self) -> int:
        return self.temporal * self.spatial

    def tag(self) -> str:
        return f"{self.temporal}x{self.spatial}"


@dataclass(frozen=True)
class ClipItem:
    item_id: str
    uri: str
    stamp: str = ""  # size-mtime of the file: a rewritten clip must not reuse its features


@dataclass
class ClipFeatures:
    """Rows follow `ids`; arrays are (N, V, ...) over the V views of each clip."""

    ids: list[str]
    cls: np.ndarray  # float32 (N, V, W)
    mean: np.ndarray  # float32 (N, V, W)
    vec: np.ndarray  # float32 (N, V, E)
    tokens: np.ndarray  # float16 (N, V, T, W)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def select(self, ids: Sequence[str]) -> ClipFeatures:
        """The rows of `ids`, in that order (ids that failed are left out: check `has`)."""
        pos = {k: i for i, k in enumerate(self.ids)}
        rows = [pos[k] for k in ids if k in pos]
        return ClipFeatures([self.ids[r] for r in rows], self.cls[rows], self.mean[rows],
                            self.vec[rows], self.tokens[rows], [])

    @classmethod
    def concat(cls, parts: list[ClipFeatures]) -> ClipFeatures:
        failed = [f for p in parts for f in p.failed]
        parts = [p for p in parts if p.ids] or parts[:1]
        return cls([k for p in parts for k in p.ids],
                   *(np.concatenate([getattr(p, a) for p in parts]) for a in ARRAYS),
                   failed=failed)


class FrozenEncoder:
    """What extraction needs of a model: the video ViT and its projection, in eval mode."""

    def __init__(self, name: str, video: nn.Module, projection: nn.Module, fingerprint: str):
        self.name, self.video, self.projection = name, video.eval(), projection.eval()
        # the weights, and the code that turns clips into these arrays
        self.fingerprint = (f"{fingerprint}|"
                            f"{code_digest(__name__, *model_modules(video, projection))}")

    @torch.no_grad()
    def encode(self, clips: torch.Tensor, grid: int) -> dict[str, np.ndarray]:
        """Normalised clips (B, C, T, H, W) -> per-clip arrays (see ClipFeatures)."""
        cls_out, tokens = self.video(clips)
        patches = tokens[:, 1:]
        b, _, w = patches.shape
        s = max(1, clips.shape[2] // self.video.cfg.tubelet)
        g = round((patches.shape[1] // s) ** 0.5)
        pooled = patches.reshape(b * s, g, g, w).permute(0, 3, 1, 2)
        if g > grid:
            pooled = F.adaptive_avg_pool2d(pooled, grid)
        pooled = pooled.flatten(2).transpose(1, 2).reshape(b, -1, w)
        return {"cls": cls_out.float().cpu().numpy(),
                "mean": patches.mean(1).float().cpu().numpy(),
                "vec": self.projection(cls_out).float().cpu().numpy(),
                "tokens": pooled.to(torch.float16).cpu().numpy()}


def weights_fingerprint(*modules: nn.Module) -> str:
    """A hash of the modules' weights (names, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                     if v.dtype != torch.bool else v.cpu().numpy().tobytes())
    return h.hexdigest()


def shard_fingerprint(encoder: FrozenEncoder, spec: ViewSpec, items: Sequence[ClipItem],
                      numerics: str = "") -> str:
    """Weights and code (the encoder's), views, items and `numerics` (what changes the
    arithmetic: the batch and the device)."""
    h = hashlib.blake2b(f"{encoder.fingerprint}|{spec}|{numerics}".encode(), digest_size=16)
    for it in sorted(items, key=lambda i: i.item_id):
        h.update(f"\n{it.item_id}\t{it.uri}\t{it.stamp}".encode())
    return h.hexdigest()


def _save(path: Path, fingerprint: str, feats: ClipFeatures) -> None:
    save_array_shard(path, fingerprint, feats.ids, feats.failed,
                     {a: getattr(feats, a) for a in ARRAYS})


def load_shard(path: Path, fingerprint: str | None = None) -> ClipFeatures | None:
    """The shard, or None when missing, unreadable or made with other weights or settings."""
    shard = load_array_shard(path, ARRAYS, fingerprint)
    if shard is None:
        return None
    return ClipFeatures(shard.ids, *(shard.arrays[a] for a in ARRAYS),
                        failed=shard.failed)  # type: ignore[arg-type]


def _empty() -> dict[str, list[Any]]:
    return {"ids": [], "failed": [], **{a: [] for a in ARRAYS}}


def _stack(acc: dict[str, list[Any]], views: int) -> ClipFeatures:
    if not acc["ids"]:
        z = np.zeros((0, views, 0), np.float32)
        return ClipFeatures([], z, z, z, np.zeros((0, views, 0, 0), np.float16), acc["failed"])
    return ClipFeatures(acc["ids"], *(np.stack(acc[a]) for a in ARRAYS), failed=acc["failed"])


def _collate(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


@dataclass
class ExtractResult:
    features: dict[str, ClipFeatures]  # encoder name -> features of all items
    shards_total: int
    shards_reused: int
    clips_decoded: int


def extract(items: Sequence[ClipItem], encoders: Sequence[FrozenEncoder], spec: ViewSpec,
            out_dir: str | Path, num_shards: int, batch_size: int = 16, workers: int = 2,
            device: torch.device | None = None,
            progress: Callable[[int], None] | None = None,
            part: tuple[int, int] | None = None) -> ExtractResult:
    """Features of `items` for every encoder under `out_dir/<encoder>/shard-*.npz`. With
    `part` = (i, n) only shards s with s % n == i (one part of a fan-out)."""
    out_dir, device = Path(out_dir), device or torch.device("cpu")
    numerics = f"batch={batch_size}|{device.type}"
    by_shard: dict[int, list[ClipItem]] = {}
    for it in items:
        shard = shard_of(it.item_id, num_shards)
        if in_part(shard, part):
            by_shard.setdefault(shard, []).append(it)

    def path(enc: FrozenEncoder, shard: int) -> Path:
        return shard_path(out_dir / enc.name, shard, num_shards)

    loaded: dict[tuple[str, int], ClipFeatures] = {}
    todo: dict[int, list[FrozenEncoder]] = {}
    for shard, shard_items in sorted(by_shard.items()):
        for enc in encoders:
            feats = load_shard(path(enc, shard),
                               shard_fingerprint(enc, spec, shard_items, numerics))
            if feats is None:
                todo.setdefault(shard, []).append(enc)
            else:
                loaded[(enc.name, shard)] = feats
    tick = progress or (lambda n: None)
    tick(sum(len(by_shard[s]) for s in by_shard if s not in todo))
    work = [(s, it) for s in sorted(todo) for it in by_shard[s]]
    dataset = LabelledClips([LabelledItem(it.item_id, it.uri, -1) for _, it in work],
                            spec.frames, spec.frame_size, spec.resize_short, spec.decoder,
                            train=False, temporal_views=spec.temporal,
                            spatial_views=spec.spatial)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers if work else 0,
                        collate_fn=_collate, persistent_workers=False)
    acc = {(e.name, s): _empty() for s, encs in todo.items() for e in encs}
    remaining = {s: len(by_shard[s]) for s in todo}
    pos = 0
    for batch in loader:
        shards = [work[pos + i][0] for i in range(len(batch))]
        pos += len(batch)
        ok = [i for i, b in enumerate(batch) if b["clips"] is not None]
        outputs: dict[str, dict[str, np.ndarray]] = {}
        if ok:
            clips = torch.stack([batch[i]["clips"] for i in ok])  # (B, V, C, T, H, W)
            flat = normalize(clips.flatten(0, 1).to(device))
            needed = {e.name: e for i in ok for e in todo[shards[i]]}
            for name, enc in needed.items():
                out = enc.encode(flat, spec.token_grid)
                outputs[name] = {a: v.reshape(len(ok), spec.views, *v.shape[1:])
                                 for a, v in out.items()}
        row_of = {i: r for r, i in enumerate(ok)}
        for i, b in enumerate(batch):
            shard = shards[i]
            for enc in todo[shard]:
                a = acc[(enc.name, shard)]
                if b["clips"] is None:
                    a["failed"].extend(b["skipped"])
                    continue
                a["ids"].append(b["item_id"])
                for name in ARRAYS:
                    a[name].append(outputs[enc.name][name][row_of[i]])
            remaining[shard] -= 1
            if remaining[shard] == 0:
                for enc in todo[shard]:
                    feats = _stack(acc.pop((enc.name, shard)), spec.views)
                    _save(path(enc, shard),
                          shard_fingerprint(enc, spec, by_shard[shard], numerics), feats)
                    loaded[(enc.name, shard)] = feats
        tick(len(batch))
    # only this run's shards: a changed shard count leaves old files that must not count
    for enc in encoders if part is None else ():
        remove_stale_shards(out_dir / enc.name, [path(enc, s) for s in by_shard])
    features = {e.name: ClipFeatures.concat([loaded[(e.name, s)] for s in sorted(by_shard)])
                if by_shard else _stack(_empty(), spec.views) for e in encoders}
    return ExtractResult(features, len(by_shard) * len(encoders),
                         sum(1 for s in by_shard for e in encoders if s not in todo
                             or e not in todo[s]), len(work))
