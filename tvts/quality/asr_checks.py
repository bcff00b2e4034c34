"""Checks of the words table, run with great-expectations on pandas frames.

Two suites: one on word rows (non-empty words; 0 <= start <= end <= duration + tolerance;
starts non-decreasing within a video; confidence in [0, 1]) and one on per-video figures
(words per minute, speech coverage, whether K transcript windows of the configured length can
all be non-empty). Each failing row is reported with its video id, so a video's quarantine
reason names the expectations it failed and the Data Docs list the failing videos.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from tvts.config import DataConfig, ValidateConfig
from tvts.data.windows import windows_possible

SUITE_WORDS, SUITE_VIDEOS = "asr_words", "asr_videos"


@dataclass
class CheckResult:
    failures: dict[str, list[str]]  # video_id -> failed expectations
    expectation_stats: dict[str, dict[str, int | bool]]
    per_video: pd.DataFrame


def word_rows(words: pl.DataFrame, videos: pl.DataFrame) -> pd.DataFrame:
    """Word rows with the derived columns the expectations read."""
    df = (words.join(videos.select("video_id", "duration_s"), on="video_id", how="left")
          .sort(["video_id", "idx"])
          .with_columns(
              (pl.col("end_s") - pl.col("start_s")).alias("word_span_s"),
              (pl.col("end_s") - pl.col("duration_s")).alias("end_past_duration_s"),
              pl.col("start_s").diff().over("video_id").fill_null(0.0).alias("start_step_s"),
          ))
    return df.to_pandas()


def video_rows(words: pl.DataFrame, videos: pl.DataFrame, data: DataConfig) -> pd.DataFrame:
    rows = []
    by_video = {vid: g for (vid,), g in words.group_by(["video_id"])}
    for v in videos.iter_rows(named=True):
        g = by_video.get(v["video_id"])
        starts = g["start_s"].to_numpy() if g is not None else np.zeros(0)
        ends = g["end_s"].to_numpy() if g is not None else np.zeros(0)
        dur = max(v["duration_s"], 1e-6)
        covered = _union_length(starts, ends)
        rows.append({
            "video_id": v["video_id"], "n_words": len(starts),
            "words_per_minute": len(starts) / (dur / 60.0),
            "speech_coverage": min(covered / dur, 1.0),
            "k_windows_possible": windows_possible(starts, dur, data.num_transcripts,
                                                   data.window_s[0], data.gap_s),
        })
    return pd.DataFrame(rows, columns=["video_id", "n_words", "words_per_minute",
                                       "speech_coverage", "k_windows_possible"])


def _union_length(starts: np.ndarray, ends: np.ndarray) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(zip(starts, np.maximum(ends, starts), strict=True)):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return float(total)


def _word_expectations(cfg: ValidateConfig) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="word"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="word", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="start_s", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="word_span_s", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="end_past_duration_s",
                                          max_value=cfg.end_tolerance_s),
        gxe.ExpectColumnValuesToBeBetween(column="start_step_s", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=0.0, max_value=1.0),
    ]


def _video_expectations(cfg: ValidateConfig) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeBetween(column="words_per_minute",
                                          min_value=cfg.min_words_per_minute,
                                          max_value=cfg.max_words_per_minute),
        gxe.ExpectColumnValuesToBeBetween(column="speech_coverage",
                                          min_value=cfg.min_speech_coverage),
        gxe.ExpectColumnValuesToBeInSet(column="k_windows_possible", value_set=[True]),
    ]


def run_checks(words: pl.DataFrame, videos: pl.DataFrame, cfg: ValidateConfig,
               data: DataConfig, docs_dir: str | Path) -> CheckResult:
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    frames = {SUITE_WORDS: word_rows(words, videos), SUITE_VIDEOS: video_rows(words, videos, data)}
    suites = {SUITE_WORDS: _word_expectations(cfg), SUITE_VIDEOS: _video_expectations(cfg)}
    ctx = gx.get_context(mode="ephemeral")
    ctx.add_data_docs_site(site_name="local", site_config={
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(Path(docs_dir).absolute())}})
    source = ctx.data_sources.add_pandas("asr")
    failures: dict[str, set[str]] = defaultdict(set)
    stats: dict[str, dict[str, int | bool]] = {}
    for name, expectations in suites.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=name))
        for e in expectations:
            suite.add_expectation(e)
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=suite, name=name))
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=f"{name}_checkpoint", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            # failing rows named by their video (in the Data Docs too), not by row number
            result_format={"result_format": "COMPLETE",
                           "unexpected_index_column_names": ["video_id"]}))
        df = frames[name]
        outcome = checkpoint.run(batch_parameters={"dataframe": df})
        for result in outcome.run_results.values():
            for r in result.results:
                label = f"{r.expectation_config.type}({r.expectation_config.kwargs['column']})"
                bad = r.result.get("unexpected_index_list") or []
                stats[label] = {"success": bool(r.success), "unexpected": len(bad)}
                for row in bad:
                    failures[str(row["video_id"])].add(label)
    return CheckResult({k: sorted(v) for k, v in failures.items()}, stats,
                       frames[SUITE_VIDEOS])
