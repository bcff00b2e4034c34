"""`pack` stage: the pretrain videos (data/dedup/videos.parquet) decoded once into JPEG
shards -> data/pack/shards/, data/pack/index.parquet, quarantine, metrics/pack.json.

With `pack.enabled: false` it writes an empty index and the loaders decode the videos."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tvts import paths
from tvts.config import Params
from tvts.pack.corpus_run import pack_corpus, plan, settings_for, to_tables
from tvts.stages.common import progress_bar, record_params, write_metrics
from tvts.tables import frame, read_table, write_table
from tvts.video.decoders import available_backend

VIDEOS = paths.PRETRAIN_VIDEOS
OUT_DIR = paths.PACK
METRICS = paths.metrics_of("pack")


def run(params: Params, videos_path: Path = VIDEOS, out_dir: Path = OUT_DIR,
        metrics_path: Path = METRICS, shards: tuple[int, int] | None = None,
        verify: bool = False) -> str:
    """The whole stage, or with `shards` = (i, n) only the shards s with s % n == i, kept
    for the whole stage to merge (a part of a Slurm array or a Dask fan-out). A kept shard
    whose frame tables fail their CRCs, or that a reader reported (`<shard>.corrupt`), is
    written again; `verify` checks every JPEG of the kept shards as well."""
    t0 = time.perf_counter()
    cfg = params.pack
    if not cfg.enabled:
        write_table(frame([], "pack_index"), out_dir / "index.parquet", "pack_index")
        write_table(frame([], "quarantine"), out_dir / "quarantine.parquet", "quarantine")
        (out_dir / "shards").mkdir(parents=True, exist_ok=True)
        record_params(params, out_dir)
        write_metrics(metrics_path, {"videos": 0}, {"enabled": False})
        return "pack: disabled (pack.enabled: false); the loaders decode the videos"
    videos = read_table(videos_path, "videos")
    settings = settings_for(cfg, params.data.resize_short, available_backend(params.data.decoder))
    jobs = plan(videos, cfg, settings, out_dir / "shards", params.corpus.s3,
                params.corpus.cache_dir, shards)
    label = f" shards {shards[0]}/{shards[1]}" if shards else ""
    with progress_bar(sum(len(j.videos) for j in jobs), f"pack{label}") as bar:
        result = pack_corpus(jobs, cfg.workers, bar.update, prune=shards is None,
                             verify=verify)
    for name, why in sorted(result.repaired.items()):
        print(f"pack: rewrote {name}: {why}", file=sys.stderr)
    if shards:
        return (f"pack{label}: {len(jobs) - result.resumed} shards written, {result.resumed} "
                f"already done; `tvts stage pack` merges every part; "
                f"{time.perf_counter() - t0:.1f} s")
    index, quarantine, metrics = to_tables(result, cfg.workers)
    write_table(index, out_dir / "index.parquet", "pack_index")
    write_table(quarantine, out_dir / "quarantine.parquet", "quarantine")
    record_params(params, out_dir)
    metrics |= {"enabled": True, "fps": cfg.fps, "jpeg_quality": cfg.jpeg_quality,
                "short_side": params.data.resize_short,
                "stage_seconds": round(time.perf_counter() - t0, 2)}
    write_metrics(metrics_path, {"videos": metrics["videos_packed"],
                                 "quarantined": metrics["videos_quarantined"],
                                 "gb_per_video_hour": metrics["gb_per_video_hour"]}, metrics)
    return (f"pack: {metrics['videos_packed']} videos, {metrics['frames']} frames at "
            f"{cfg.fps:g} fps in {metrics['shards']} shards ({metrics['shards_resumed']} "
            f"already done, {metrics['shards_repaired']} damaged and rewritten), "
            f"{metrics['shard_bytes'] / 1e6:.1f} MB = "
            f"{metrics['gb_per_video_hour']} GB per video-hour; "
            f"{metrics['videos_quarantined']} quarantined; "
            f"{metrics['video_hours_per_core_hour']} video-hours per core-hour; "
            f"{time.perf_counter() - t0:.1f} s")
