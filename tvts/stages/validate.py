"""`validate` stage: words + videos -> data/asr/valid.parquet, quarantine, Data Docs, metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from tvts import paths
from tvts.config import Params
from tvts.errors import UserError
from tvts.quality.asr_checks import run_checks
from tvts.reports.datadocs import make_offline
from tvts.stages.common import write_metrics
from tvts.tables import frame, read_table, write_table

CORPUS, ASR = paths.CORPUS, paths.ASR
REPORT = paths.VALIDATION_REPORT
METRICS = paths.metrics_of("validate")
STAGE = "validate"


def run(params: Params, corpus_dir: Path = CORPUS, asr_dir: Path = ASR,
        report_dir: Path = REPORT, metrics_path: Path = METRICS) -> str:
    cfg = params.validate_
    videos = read_table(corpus_dir / "videos.parquet", "videos")
    words = read_table(asr_dir / "words.parquet", "words")
    asr_rejected = set(read_table(asr_dir / "quarantine.parquet", "quarantine")["video_id"])
    transcribed = videos.filter(~pl.col("video_id").is_in(asr_rejected))
    shutil.rmtree(report_dir, ignore_errors=True)
    result = run_checks(words, transcribed, cfg, params.data, report_dir)
    make_offline(report_dir)  # GX's pages load their scripts and styles from CDNs
    failed = result.failures
    valid = transcribed.filter(~pl.col("video_id").is_in(list(failed)))
    uris = dict(zip(transcribed["video_id"], transcribed["uri"], strict=True))
    quarantine = frame([{"video_id": vid, "uri": uris.get(vid), "stage": STAGE,
                         "reason": "failed " + ", ".join(names)}
                        for vid, names in sorted(failed.items())], "quarantine")
    write_table(valid, asr_dir / "valid.parquet", "videos")
    write_table(quarantine, asr_dir / "validation_quarantine.parquet", "quarantine")
    total = transcribed.height
    pass_rate = valid.height / total if total else 0.0
    # per-expectation results are the report's (Data Docs), and the details'
    write_metrics(metrics_path, {
        "videos": valid.height, "quarantined": total - valid.height,
        "pass_rate": round(pass_rate, 4),
    }, {"videos_checked": total, "videos_passed": valid.height,
        "pass_rate": round(pass_rate, 4), "expectations": result.expectation_stats})
    summary = (f"validate: {valid.height}/{total} videos pass ({pass_rate:.1%}); "
               f"report: {report_dir / 'index.html'}")
    if pass_rate < cfg.min_pass_rate:
        raise UserError(f"{summary}, under validate.min_pass_rate = {cfg.min_pass_rate}. See "
                        f"{asr_dir / 'validation_quarantine.parquet'} for the failed "
                        "expectations of each video.")
    return summary
