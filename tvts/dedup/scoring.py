"""Scoring the flagged pairs against planted leaks (the demo corpus's truth table)."""

from __future__ import annotations

import polars as pl

KEYS = ["video_id", "downstream_set", "downstream_id"]


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def score(leaks: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float | int | None]:
    """Precision / recall of excluded pairs and of excluded videos against the truth."""
    pred = leaks.filter(pl.col("decision") == "exclude")
    pred_pairs = set(pred.select(KEYS).iter_rows())
    true_pairs = set(truth.select(KEYS).iter_rows())
    pred_videos, true_videos = set(pred["video_id"]), set(truth["video_id"])
    hit, vhit = len(pred_pairs & true_pairs), len(pred_videos & true_videos)
    return {
        "planted_pairs": len(true_pairs),
        "pair_precision": _ratio(hit, len(pred_pairs)),
        "pair_recall": _ratio(hit, len(true_pairs)),
        "video_precision": _ratio(vhit, len(pred_videos)),
        "video_recall": _ratio(vhit, len(true_videos)),
        "missed": sorted("/".join(k) for k in true_pairs - pred_pairs),
        "false_flags": sorted("/".join(k) for k in pred_pairs - true_pairs),
    }
