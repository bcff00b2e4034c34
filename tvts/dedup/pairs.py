"""From frame matches to video pairs: best similarity and how many of the video's frames match."""

from __future__ import annotations

import numpy as np
import polars as pl

from tvts.dedup.extract import Features


def frame_matches(queries: Features, indexed: Features, q_rows: np.ndarray,
                  i_rows: np.ndarray, sims: np.ndarray) -> pl.DataFrame:
    """One row per (query frame, indexed frame) pair above the threshold."""
    q_keys = np.asarray(queries.keys, dtype=object)
    i_keys = np.asarray(indexed.keys, dtype=object)
    return pl.DataFrame({
        "query_key": q_keys[queries.item[q_rows]].tolist(),
        "query_time_s": queries.time_s[q_rows].astype(np.float64),
        "index_key": i_keys[indexed.item[i_rows]].tolist(),
        "match_time_s": indexed.time_s[i_rows].astype(np.float64),
        "crop_scale": indexed.scale[i_rows].astype(np.float64),
        "query_crop": queries.scale[q_rows].astype(np.float64),
        # the views on both sides: flipped / luma / borders cut (tvts.dedup.views bits)
        "view": (indexed.view[i_rows] | queries.view[q_rows]).astype(np.int8),
        "similarity": sims.astype(np.float64),
    }, schema={"query_key": pl.Utf8, "query_time_s": pl.Float64, "index_key": pl.Utf8,
               "match_time_s": pl.Float64, "crop_scale": pl.Float64,
               "query_crop": pl.Float64, "view": pl.Int8,
               "similarity": pl.Float64})


def video_pairs(matches: pl.DataFrame, min_frames: int) -> pl.DataFrame:
    """Per (query video, indexed item): max similarity, the number of distinct query frames
    that match, and where the best pair is; only pairs with >= `min_frames` matching frames."""
    best = pl.col("similarity").arg_max()
    return (
        matches.group_by("query_key", "index_key")
        .agg(
            pl.col("similarity").max(),
            pl.col("query_time_s").n_unique().cast(pl.Int32).alias("matching_frames"),
            pl.col("query_time_s").get(best),
            pl.col("match_time_s").get(best),
            pl.col("crop_scale").get(best),
            pl.col("query_crop").get(best),
            pl.col("view").get(best),
        )
        .filter(pl.col("matching_frames") >= min_frames)
        .sort(["similarity", "query_key", "index_key"], descending=[True, False, False])
    )
