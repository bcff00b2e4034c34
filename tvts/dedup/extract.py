"""Sharded, resumable frame-feature extraction.

Items map to shards by a hash of their key (as the ASR journals do). A shard is one .npz file
written atomically once all its items are done, carrying a fingerprint of the encoder, the
frame sampling, the views and their rules, the code that computes the vectors (this module
and what it imports: tvts.provenance) and the shard's items: a rerun skips every shard whose
file matches, so an interrupted run redoes at most the shards in flight, and adding videos
redoes only the shards they land in. Items that cannot be decoded are recorded with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tvts.config import S3Config
from tvts.dedup.encoders import EncoderSpec, FrameEncoder, build_encoder
from tvts.dedup.frames import centre_crop, clip_times, query_times, read_frames_at
from tvts.dedup.views import ViewSet, index_views, prepare, query_views
from tvts.parallel import process_map
from tvts.provenance import code_digest
from tvts.sharding import (
    in_part,
    load_array_shard,
    remove_stale_shards,
    save_array_shard,
    shard_of,
    shard_path,
)
from tvts.storage import local_file
from tvts.video.decoders import DecodeError


@dataclass(frozen=True)
class FeatureItem:
    key: str
    uri: str
    duration_s: float
    # changes when the file does (size and mtime of a local file): a clip rewritten under the
    # same name must not reuse its old features
    stamp: str = ""


@dataclass(frozen=True)
class Sampling:
    """Frames per item: `frames` evenly spread (clips), or `fps` up to `max_frames` (long
    videos); each frame is encoded at every centre-crop scale in `crop_scales`."""

    frames: int | None = None
    fps: float | None = None
    max_frames: int = 600
    crop_scales: tuple[float, ...] = (1.0,)

    def times(self, duration_s: float) -> np.ndarray:
        if self.frames is not None:
            return clip_times(duration_s, self.frames)
        assert self.fps is not None
        return query_times(duration_s, self.fps, self.max_frames)


@lru_cache(maxsize=2)
def _encoder(spec: EncoderSpec) -> FrameEncoder:
    return build_encoder(spec)


@dataclass
class Features:
    """Vectors of many items: row r is frame `time_s[r]` of item `keys[item[r]]`, crop
    `scale[r]`, view bits `view[r]` (tvts.dedup.views)."""

    keys: list[str]
    item: np.ndarray  # int32 (R,)
    time_s: np.ndarray  # float32 (R,)
    scale: np.ndarray  # float32 (R,)
    view: np.ndarray  # int8 (R,)
    vectors: np.ndarray  # float32 (R, D)
    failed: list[tuple[str, str]]

    @classmethod
    def empty(cls, dim: int) -> Features:
        return cls([], np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int8), np.zeros((0, dim), np.float32), [])

    @classmethod
    def concat(cls, parts: list[Features], dim: int) -> Features:
        """One table of all `parts` (item numbers shifted); one concatenation per column."""
        if not parts:
            return cls.empty(dim)
        offsets = np.cumsum([0] + [len(p.keys) for p in parts[:-1]])
        return cls([k for p in parts for k in p.keys],
                   np.concatenate([p.item + o for p, o in zip(parts, offsets, strict=True)])
                   .astype(np.int32),
                   np.concatenate([p.time_s for p in parts]),
                   np.concatenate([p.scale for p in parts]),
                   np.concatenate([p.view for p in parts]).astype(np.int8),
                   np.concatenate([p.vectors for p in parts]).reshape(-1, dim),
                   [f for p in parts for f in p.failed])


@dataclass(frozen=True)
class ShardJob:
    path: str
    fingerprint: str
    items: tuple[FeatureItem, ...]
    sampling: Sampling
    encoder: EncoderSpec
    views: ViewSet
    indexed: bool  # downstream frames (every view) or pretraining frames (and their insets)
    decode_size: int
    decoder: str
    s3: S3Config
    cache_dir: str


def encode_frames(frames: np.ndarray, times: np.ndarray, encoder: FrameEncoder,
                  crop_scales: tuple[float, ...], views: ViewSet, indexed: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, times, crop scales, view bits) of frames: bars cut, then each crop scale;
    downstream frames in every view, pretraining frames and the insets found in them (grey
    ones marked)."""
    frames, bits = prepare(frames, views)
    searched = [(frames, times, bits)] if indexed else query_views(frames, times, bits, views)
    vecs, ts, scales, kinds = [], [], [], []
    for s in crop_scales:
        variants = [(v, t, b) for f, t, b0 in searched
                    for v, b in (index_views(centre_crop(f, s), b0, views) if indexed
                                 else [(centre_crop(f, s), b0)])]
        # one encoder call per crop scale: all views are the same size
        vecs.append(encoder.encode(np.concatenate([f for f, _, _ in variants])))
        for _, t, b in variants:
            ts.append(t)
            scales.append(np.full(len(t), s))
            kinds.append(b)
    return (np.concatenate(vecs), np.concatenate(ts).astype(np.float32),
            np.concatenate(scales).astype(np.float32), np.concatenate(kinds).astype(np.int8))


def encode_item(item: FeatureItem, job: ShardJob, encoder: FrameEncoder
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    path = str(local_file(item.uri, job.s3, job.cache_dir))
    frames, times = read_frames_at(path, job.sampling.times(item.duration_s), job.decode_size,
                                   job.decoder)
    return encode_frames(frames, times, encoder, job.sampling.crop_scales, job.views,
                         job.indexed)


FEATURE_ARRAYS = ("item", "time_s", "scale", "view", "vectors")


def _save(path: str, fingerprint: str, feats: Features) -> None:
    save_array_shard(path, fingerprint, feats.keys, feats.failed,
                     {a: getattr(feats, a) for a in FEATURE_ARRAYS}, ids_key="keys")


def load_shard(path: str | Path, fingerprint: str | None = None) -> Features | None:
    """The shard's features, or None when missing, unreadable or made with other settings."""
    shard = load_array_shard(path, FEATURE_ARRAYS, fingerprint, ids_key="keys")
    if shard is None:
        return None
    return Features(shard.ids, *(shard.arrays[a] for a in FEATURE_ARRAYS),
                    failed=shard.failed)  # type: ignore[arg-type]


def extract_shard(job: ShardJob) -> int:
    """Encode every item of the shard and write it; returns the number of vectors."""
    encoder = _encoder(job.encoder)
    parts = []
    failed: list[tuple[str, str]] = []
    for item in job.items:
        try:
            v, t, s, b = encode_item(item, job, encoder)
        except (DecodeError, OSError, RuntimeError, ValueError) as e:
            failed.append((item.key, f"{type(e).__name__}: {str(e).splitlines()[0]}"))
            continue
        parts.append(Features([item.key], np.zeros(len(v), np.int32), t, s, b, v, []))
    feats = Features.concat(parts, encoder.dim)
    feats.failed = failed
    _save(job.path, job.fingerprint, feats)
    return len(feats.vectors)


def shard_fingerprint(items: list[FeatureItem], settings: str) -> str:
    h = hashlib.blake2b(settings.encode(), digest_size=16)
    for it in sorted(items, key=lambda i: i.key):
        h.update(f"\n{it.key}\t{it.uri}\t{it.duration_s:.3f}\t{it.stamp}".encode())
    return h.hexdigest()


@dataclass
class ExtractResult:
    features: Features
    shards_total: int
    shards_reused: int


def extract(items: list[FeatureItem], out_dir: str | Path, sampling: Sampling,
            encoder: EncoderSpec, num_shards: int, workers: int, decode_size: int,
            views: ViewSet | None = None, indexed: bool = True,
            decoder: str = "pyav", s3: S3Config | None = None, cache_dir: str = ".cache/tvts",
            progress: Callable[[int], None] | None = None,
            part: tuple[int, int] | None = None) -> ExtractResult:
    """Features of all `items`, reusing finished shards under `out_dir`. With `part` = (i, n)
    only shards s with s % n == i are extracted and returned (one part of a fan-out)."""
    out_dir = Path(out_dir)
    views = views or ViewSet()
    enc = _encoder(encoder)
    settings = (f"{enc.signature()}|{sampling}|{views}|{indexed}|{decode_size}|{decoder}|"
                f"{code_digest(__name__)}")
    by_shard: dict[int, list[FeatureItem]] = {}
    for it in items:
        shard = shard_of(it.key, num_shards)
        if in_part(shard, part):
            by_shard.setdefault(shard, []).append(it)
    jobs: list[ShardJob] = []
    loaded: dict[str, Features] = {}  # shards reused from an earlier run, read once
    for shard, shard_items in sorted(by_shard.items()):
        path = shard_path(out_dir, shard, num_shards)
        fp = shard_fingerprint(shard_items, settings)
        if (feats := load_shard(path, fp)) is not None:
            loaded[str(path)] = feats
            continue
        jobs.append(ShardJob(str(path), fp, tuple(shard_items), sampling, encoder, views,
                             indexed, decode_size, decoder, s3 or S3Config(), cache_dir))
    tick = progress or (lambda n: None)
    tick(len(loaded))
    # A learned encoder in one process keeps one copy of the model (and the GPU) busy.
    n_workers = 1 if encoder.kind != "dct" else workers
    process_map(extract_shard, jobs, n_workers, progress=tick)
    # only this run's shards: a changed shard count leaves old files that must not count
    wanted = [str(shard_path(out_dir, s, num_shards)) for s in sorted(by_shard)]
    if part is None:
        remove_stale_shards(out_dir, wanted)
    for job in jobs:
        feats = load_shard(job.path)
        if feats is None:
            raise RuntimeError(f"feature shard {job.path} is unreadable right after writing it")
        loaded[job.path] = feats
    return ExtractResult(Features.concat([loaded[p] for p in wanted], enc.dim), len(by_shard),
                         len(by_shard) - len(jobs))
