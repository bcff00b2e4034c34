"""The Parquet tables the stages exchange: each schema declared once, read and written here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from tvts.errors import MissingInput
from tvts.storage import atomic_path

VIDEOS = pl.Schema(
    {
        "video_id": pl.Utf8,
        "uri": pl.Utf8,
        "duration_s": pl.Float64,
        "fps": pl.Float64,
        "width": pl.Int32,
        "height": pl.Int32,
        "has_audio": pl.Boolean,
        "source": pl.Utf8,
        "split": pl.Utf8,
    }
)
WORDS = pl.Schema(
    {
        "video_id": pl.Utf8,
        "idx": pl.Int32,
        "word": pl.Utf8,
        "start_s": pl.Float64,
        "end_s": pl.Float64,
        "confidence": pl.Float64,
    }
)
# Words a source ships with start times only (YT-Temporal / MERLOT `subtitles`).
SUBTITLES = pl.Schema(
    {"video_id": pl.Utf8, "idx": pl.Int32, "word": pl.Utf8, "start_s": pl.Float64}
)
QUARANTINE = pl.Schema(
    {"video_id": pl.Utf8, "uri": pl.Utf8, "stage": pl.Utf8, "reason": pl.Utf8}
)
# One row per downstream item (a clip of an evaluation set), written by the `downstream` stage.
DOWNSTREAM = pl.Schema(
    {
        "downstream_set": pl.Utf8,
        "downstream_id": pl.Utf8,
        "uri": pl.Utf8,
        "split": pl.Utf8,
        "label": pl.Utf8,
        # every caption of the item (each one a text query; one paragraph for DiDeMo)
        "captions": pl.List(pl.Utf8),
        "duration_s": pl.Float64,
    }
)
# One row per SVO-Probes item (a sentence, a positive and a negative image that differs in
# one concept), written by the `downstream` stage.
SVO_PROBES = pl.Schema(
    {
        "probe_id": pl.Utf8,
        "sentence": pl.Utf8,
        "neg_type": pl.Utf8,  # the concept the negative changes: subj, verb or obj
        "pos_triplet": pl.Utf8,
        "neg_triplet": pl.Utf8,
        "pos_uri": pl.Utf8,
        "neg_uri": pl.Utf8,
    }
)
# Video pairs (pretraining video, downstream item) the dedup stage flagged or was told about.
LEAKS = pl.Schema(
    {
        "video_id": pl.Utf8,
        "uri": pl.Utf8,
        "downstream_set": pl.Utf8,
        "downstream_id": pl.Utf8,
        "downstream_uri": pl.Utf8,
        "similarity": pl.Float64,  # best frame pair
        "matching_frames": pl.Int32,  # the video's frames with a match in this item
        "query_time_s": pl.Float64,  # the best pair's frame in the pretraining video
        "match_time_s": pl.Float64,  # ... and in the downstream item
        "crop_scale": pl.Float64,  # the downstream crop that matched
        "matched_view": pl.Utf8,  # e.g. "flipped, borders cut" or "as is"
        "decision": pl.Utf8,  # exclude | keep
        "decided_by": pl.Utf8,  # auto | the decisions file
    }
)
# Planted leaks of the demo corpus: the truth the dedup stage is scored against.
LEAK_TRUTH = pl.Schema(
    {
        "video_id": pl.Utf8,
        "uri": pl.Utf8,
        "downstream_set": pl.Utf8,
        "downstream_id": pl.Utf8,
        "alteration": pl.Utf8,
        "offset_s": pl.Float64,
    }
)

# One row per packed video (the `pack` stage): its shard and, in the shard, its frame table
# (time, byte range and CRC of each JPEG). Two levels, so the index stays one row per video
# at the paper's scale (6M videos, billions of frames).
PACK_INDEX = pl.Schema(
    {
        "video_id": pl.Utf8,
        "shard": pl.Utf8,  # file name of the shard (a tar) under the shards folder
        "table_offset": pl.Int64,  # the frame table's first byte in the shard
        "table_size": pl.Int32,
        "table_crc32": pl.UInt32,
        "frames": pl.Int32,
        "jpeg_bytes": pl.Int64,  # the video's JPEGs together
        "width": pl.Int32,
        "height": pl.Int32,
    }
)

SCHEMAS: dict[str, pl.Schema] = {
    "svo_probes": SVO_PROBES,
    "videos": VIDEOS,
    "words": WORDS,
    "subtitles": SUBTITLES,
    "quarantine": QUARANTINE,
    "downstream": DOWNSTREAM,
    "leaks": LEAKS,
    "leak_truth": LEAK_TRUTH,
    "pack_index": PACK_INDEX,
}


class SchemaError(ValueError):
    """A table does not have its declared columns."""


def conform(df: pl.DataFrame, schema: pl.Schema, name: str) -> pl.DataFrame:
    """Exactly the schema's columns, in order, cast to its types; a missing column is an error."""
    missing = [c for c in schema.names() if c not in df.columns]
    extra = [c for c in df.columns if c not in schema]
    if missing or extra:
        raise SchemaError(f"table {name!r}: missing columns {missing}, unexpected {extra}")
    return df.select([pl.col(c).cast(t, strict=True) for c, t in schema.items()])


def frame(rows: Iterable[Mapping[str, Any]], name: str) -> pl.DataFrame:
    schema = SCHEMAS[name]
    return pl.DataFrame(list(rows), schema=schema, orient="row")


def write_table(df: pl.DataFrame, path: str | Path, name: str) -> pl.DataFrame:
    """Validate against the named schema and write atomically."""
    df = conform(df, SCHEMAS[name], name)
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return df


def read_table(path: str | Path, name: str) -> pl.DataFrame:
    if not Path(path).exists():
        raise MissingInput(str(path), f"the {name} table")
    return conform(pl.read_parquet(path), SCHEMAS[name], name)
