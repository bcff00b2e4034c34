"""ASR on demo videos in-process vs fanned out by shard on a local Dask cluster of 2 workers
(the flow's `fan_out`, then the stage's merge), side by side in one run: wall time, the ratio,
and whether the two words tables are identical.

    python bench/asr_fanout_bench.py [--videos 24] [--workers 2]
        [--out bench/results/asr_fanout.json]

Needs the demo corpus (`dvc repro corpus`). Each side runs in its own scratch workspace with
the first `--videos` videos; Prefect uses its temporary local server unless PREFECT_API_URL is
set (started before the timing, by a warm-up flow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from prefect import flow
from results_io import machine, write_results

from flows.pipeline import fan_out, task_runner
from tvts.tables import read_table, write_table


def workspace(root: Path, videos: pl.DataFrame, subtitles: pl.DataFrame) -> Path:
    (root / "data" / "corpus").mkdir(parents=True)
    shutil.copy("params.yaml", root / "params.yaml")
    write_table(videos, root / "data/corpus/videos.parquet", "videos")
    write_table(subtitles, root / "data/corpus/subtitles.parquet", "subtitles")
    return root


def stage(ws: Path) -> None:
    subprocess.run([sys.executable, "-m", "tvts", "stage", "asr"], cwd=ws, check=True,
                   capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def word_differences(a: pl.DataFrame, b: pl.DataFrame) -> dict[str, object]:
    """Whether the two tables hold the same words of the same videos in the same order, and
    how far their timings and confidences are apart. CTranslate2's int8 kernels are not
    bit-reproducible across process layouts on every CPU (on an AMD EPYC: the same words,
    times 0.02-0.04 s apart, one or two Whisper timestamp steps), so `words_identical` can be
    false where the fan-out lost nothing."""
    keys = ["video_id", "idx", "word"]
    same = a.height == b.height and a.select(keys).equals(b.select(keys))
    if not same:
        return {"same_words": False}
    j = a.join(b, on=["video_id", "idx"], suffix="_b")

    def gap(col: str) -> float:
        return round(float((j[col] - j[f"{col}_b"]).abs().max() or 0.0), 4)

    return {"same_words": True, "max_time_diff_s": max(gap("start_s"), gap("end_s")),
            "max_confidence_diff": gap("confidence")}


@flow
def warm_up() -> None:
    """Starts Prefect's API (a temporary server when none is configured) before timing."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="bench/results/asr_fanout.json")
    args = ap.parse_args()
    videos = read_table("data/corpus/videos.parquet", "videos").sort("video_id").head(
        args.videos)
    # the scratch workspaces are elsewhere: the demo's relative paths made absolute
    videos = videos.with_columns(pl.col("uri").map_elements(
        lambda u: str(Path(u).resolve()), return_dtype=pl.Utf8))
    subtitles = read_table("data/corpus/subtitles.parquet", "subtitles")
    warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        a = workspace(Path(tmp) / "in_process", videos, subtitles)
        b = workspace(Path(tmp) / "dask", videos, subtitles)
        t = time.perf_counter()
        stage(a)
        in_process = time.perf_counter() - t
        t = time.perf_counter()
        fan_out.with_options(task_runner=task_runner("dask", args.workers))(
            "asr", args.workers, str(b))
        parts = time.perf_counter() - t
        stage(b)  # the merge: every video is found done in the shards
        dask = time.perf_counter() - t
        wa = pl.read_parquet(a / "data/asr/words.parquet")
        wb = pl.read_parquet(b / "data/asr/words.parquet")
        merged = json.loads((b / "metrics/details/asr.json").read_text())
    result = {"machine": machine(), "videos": videos.height,
              "audio_min": round(float(videos["duration_s"].sum()) / 60, 2),
              "dask_workers": args.workers,
              "in_process_s": round(in_process, 1), "dask_s": round(dask, 1),
              "dask_parts_s": round(parts, 1), "dask_merge_s": round(dask - parts, 1),
              "ratio_in_process_over_dask": round(in_process / dask, 3),
              "words": wa.height, "words_identical": wa.height > 0 and wa.equals(wb),
              **word_differences(wa, wb),
              "merge_videos_resumed": merged["videos_resumed"]}
    write_results(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
