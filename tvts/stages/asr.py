"""`asr` stage: videos (+ YT-Temporal subtitles) -> data/asr/words.parquet, quarantine, metrics."""

from __future__ import annotations

import time
from pathlib import Path

from tvts import paths
from tvts.asr.corpus_run import tasks_for, to_tables, transcribe_corpus
from tvts.config import Params
from tvts.sharding import in_part, shard_of
from tvts.stages.common import progress_bar, record_params, write_metrics
from tvts.tables import read_table, write_table

CORPUS = paths.CORPUS
OUT_DIR = paths.ASR
METRICS = paths.metrics_of("asr")


def run(params: Params, corpus_dir: Path = CORPUS, out_dir: Path = OUT_DIR,
        metrics_path: Path = METRICS, shards: tuple[int, int] | None = None) -> str:
    """The whole stage, or with `shards` = (i, n) only the videos of journal shards s with
    s % n == i, journaled and not merged (a part of a Slurm array or a Dask fan-out; the
    whole stage afterwards finds them done and merges)."""
    t0 = time.perf_counter()
    cfg = params.asr
    videos = read_table(corpus_dir / "videos.parquet", "videos")
    subtitles = read_table(corpus_dir / "subtitles.parquet", "subtitles")
    tasks = [t for t in tasks_for(videos, subtitles)
             if in_part(shard_of(t.video_id, cfg.num_shards), shards)]
    label = f" shards {shards[0]}/{shards[1]}" if shards else ""
    with progress_bar(len(tasks), f"asr{label} ({cfg.engine})") as bar:
        result = transcribe_corpus(tasks, cfg, params.corpus.s3, params.corpus.cache_dir,
                                   out_dir / "shards", bar.update)
    if shards:
        return (f"asr{label}: {len(result.records) - result.resumed} videos transcribed, "
                f"{result.resumed} already done; `tvts stage asr` merges every part; "
                f"{time.perf_counter() - t0:.1f} s")
    words, quarantine, metrics = to_tables(result)
    write_table(words, out_dir / "words.parquet", "words")
    write_table(quarantine, out_dir / "quarantine.parquet", "quarantine")
    record_params(params, out_dir)
    metrics["engine"] = cfg.engine
    write_metrics(metrics_path, {"videos": metrics["videos_done"],
                                 "quarantined": metrics["videos_failed"],
                                 "words": metrics["words"]}, metrics)
    return (f"asr: {metrics['videos_done']} videos transcribed ({metrics['words']} words, "
            f"{metrics['audio_hours'] * 60:.1f} min of audio), {metrics['videos_skipped']} "
            f"skipped, {metrics['videos_failed']} failed, {metrics['videos_resumed']} resumed, "
            f"{metrics['videos_retried']} failed before and retried; "
            f"real-time factor {metrics['real_time_factor']}; "
            f"{time.perf_counter() - t0:.1f} s")
