"""Pack a corpus: videos grouped into shards by a hash of their id, shards written in
parallel worker processes, finished shards kept across runs, then the shard manifests
merged into the packed index, the quarantine table and the metrics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from tvts.config import PackConfig, S3Config
from tvts.pack.shards import PackSettings, ShardJob, VideoToPack, verify_shard, write_shard
from tvts.parallel import process_map
from tvts.provenance import code_digest
from tvts.sharding import in_part, shard_of
from tvts.storage import file_stamp
from tvts.tables import frame
from tvts.video.packed import corrupt_marker


def settings_for(cfg: PackConfig, short_side: int, decoder: str) -> PackSettings:
    return PackSettings(cfg.fps, cfg.jpeg_quality, cfg.chroma, short_side, decoder)


def plan(videos: pl.DataFrame, cfg: PackConfig, settings: PackSettings, out_dir: str | Path,
         s3: S3Config, cache_dir: str, part: tuple[int, int] | None = None) -> list[ShardJob]:
    """One job per non-empty shard (of part i/n only, with `part`), each fingerprinted by
    the settings, its videos (ids, URIs, file sizes and times) and the code that packs."""
    code = code_digest("tvts.pack.shards")
    by_shard: dict[int, list[VideoToPack]] = {}
    for r in videos.sort("video_id").iter_rows(named=True):
        s = shard_of(r["video_id"], cfg.num_shards)
        if in_part(s, part):
            by_shard.setdefault(s, []).append(VideoToPack(
                r["video_id"], r["uri"], r["width"], r["height"], file_stamp(r["uri"])))
    jobs = []
    for s, vids in sorted(by_shard.items()):
        key = json.dumps([code, asdict(settings), [asdict(v) for v in vids]], sort_keys=True)
        fp = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        jobs.append(ShardJob(s, tuple(vids), settings, str(out_dir), fp, s3, cache_dir))
    return jobs


def finished(job: ShardJob, verify: bool = False
             ) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) for a shard an earlier run finished with the same inputs and whose
    bytes still hold what the manifest says; (None, why) for one that is kept no more because
    it is damaged (a reader reported it, or a check failed); (None, None) when none is done.
    Every kept shard's frame tables are checked against their CRCs; with `verify` every JPEG
    too."""
    try:
        manifest = json.loads(job.manifest.read_text())
        size = job.path.stat().st_size
    except (OSError, ValueError):
        return None, None
    if manifest.get("fingerprint") != job.fingerprint or manifest.get("shard_bytes") != size:
        return None, None
    marker = corrupt_marker(job.path)
    if marker.exists():
        return None, f"reported by a reader: {marker.read_text().strip()}"
    damage = verify_shard(job.path, manifest["index"], full=verify)
    if damage is not None:
        return None, damage
    return manifest, None


@dataclass
class PackResult:
    manifests: list[dict[str, Any]]
    resumed: int  # shards finished by an earlier run
    removed: list[str]  # files of shards no job has any more
    repaired: dict[str, str]  # shard name -> why it was written again


def pack_corpus(jobs: list[ShardJob], workers: int,
                progress: Callable[[int], None] | None = None,
                prune: bool = True, verify: bool = False) -> PackResult:
    """Write the shards not already done (or damaged since); with `prune`, delete shard files
    (and manifests, and readers' notes) of shards that hold no video now."""
    done, repaired = {}, {}
    for j in jobs:
        manifest, damage = finished(j, verify)
        if manifest is not None:
            done[j.shard] = manifest
        elif damage is not None:
            repaired[j.name] = damage
    tick = progress or (lambda n: None)
    tick(sum(len(j.videos) for j in jobs if j.shard in done))
    todo = [j for j in jobs if j.shard not in done]
    # results come in job order
    for job, m in zip(todo, process_map(write_shard, todo, workers), strict=True):
        done[job.shard] = m
        tick(len(m["index"]) + len(m["quarantine"]))
    removed = []
    if prune and jobs:
        keep = {p for j in jobs for p in (j.path, j.manifest)}
        for p in sorted(jobs[0].path.parent.glob("shard-*")):
            if p not in keep:
                p.unlink()
                removed.append(p.name)
    return PackResult([done[j.shard] for j in jobs], len(jobs) - len(todo), removed, repaired)


def to_tables(result: PackResult, workers: int
              ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    index = [row for m in result.manifests for row in m["index"]]
    quarantine = [row for m in result.manifests for row in m["quarantine"]]
    video_s = sum(m["video_s"] for m in result.manifests)
    core_s = sum(m["seconds"] for m in result.manifests)
    jpeg = sum(r["jpeg_bytes"] for r in index)
    shard_bytes = sum(m["shard_bytes"] for m in result.manifests)
    hours = video_s / 3600
    metrics = {
        "videos_packed": len(index), "videos_quarantined": len(quarantine),
        "frames": sum(r["frames"] for r in index), "shards": len(result.manifests),
        "shards_resumed": result.resumed, "stale_files_removed": len(result.removed),
        "shards_repaired": len(result.repaired),
        "video_hours": round(hours, 4), "shard_bytes": shard_bytes, "jpeg_bytes": jpeg,
        "gb_per_video_hour": round(shard_bytes / 1e9 / hours, 4) if hours else None,
        # worker seconds spent writing the shards (the ones written by earlier runs included)
        "pack_core_seconds": round(core_s, 2),
        "video_hours_per_core_hour": round(video_s / core_s, 2) if core_s else None,
        "workers": workers,
    }
    return frame(index, "pack_index"), frame(quarantine, "quarantine"), metrics
