"""What re-release handling costs the dedup stage: the stage as it was vs as it is, one run.

Runs the whole `dedup` stage twice on the demo's validated videos and downstream manifests
(made by `dvc repro validate downstream`), each into its own temporary folder so that no
feature shard is reused: `before` (no views, index crops down to 0.7, threshold 0.99: the
stage before bars, flips, luma and insets were handled) and `now` (params.yaml's dedup
section). Reports each run's time, index and query sizes and the planted-leak scores, their
ratios, and the per-frame cost of each view step on one core.

    python bench/dedup_views_cost.py [--out bench/results/dedup_views_cost.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from results_io import machine, write_results

from tvts.config import load_params
from tvts.dedup.borders import crop_borders, insets
from tvts.dedup.encoders import DCTEncoder
from tvts.dedup.frames import query_times, read_frames_at
from tvts.dedup.views import chroma_level, greyscale
from tvts.stages import dedup as dedup_stage
from tvts.stages.common import details_path

BEFORE = {"crop_borders": False, "index_flips": False, "luma_path": False,
          "query_insets": False, "crop_scales": [1.0, 0.9, 0.8, 0.7], "threshold": 0.99}


def run_stage(params, root: Path, tag: str) -> dict:
    t0 = time.perf_counter()
    dedup_stage.run(params, Path("data/asr/valid.parquet"), Path("data/downstream"),
                    Path("data/corpus/leak_truth.parquet"), root / tag / "dedup",
                    root / tag / "report", root / tag / "metrics.json")
    m = json.loads(details_path(root / tag / "metrics.json").read_text())
    return {"wall_s": round(time.perf_counter() - t0, 1), "features_s": m["features_s"],
            "indexed_vectors": m["indexed_vectors"], "query_vectors": m["query_frames"],
            "pairs": m["pairs"], "excluded_videos": m["excluded_videos"],
            "planted": {k: m["planted"][k] for k in ("pair_precision", "pair_recall",
                                                     "planted_pairs")},
            "false_flags": len(m["planted"]["false_flags"])}


def per_frame_ms(frames: np.ndarray) -> dict:
    """Milliseconds per frame of each step, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    enc = DCTEncoder()
    steps = {"dct_encode": lambda f: enc.encode(f), "borders": crop_borders,
             "insets": insets, "grey_check": chroma_level,
             "flip_and_luma_views": lambda f: (np.ascontiguousarray(f[:, :, ::-1]),
                                               greyscale(f))}
    out = {}
    try:
        for name, fn in steps.items():
            fn(frames[:4])
            t0 = time.perf_counter()
            fn(frames)
            out[name] = round(1000 * (time.perf_counter() - t0) / len(frames), 3)
    finally:
        torch.set_num_threads(threads)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/dedup_views_cost.json")
    args = ap.parse_args()
    now = load_params("params.yaml")
    before = now.model_copy(update={"dedup": now.dedup.model_copy(update=BEFORE)})
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"before": run_stage(before, Path(tmp), "before"),
                "now": run_stage(now, Path(tmp), "now")}
    videos = pl.read_parquet("data/asr/valid.parquet").head(20)
    frames = np.concatenate([
        read_frames_at(r["uri"], query_times(r["duration_s"], now.dedup.query_fps,
                                             now.dedup.max_query_frames),
                       now.dedup.decode_size)[0] for r in videos.iter_rows(named=True)])
    result = {
        "machine": machine(note="2-core CPU development machine (shared)"),
        "runs": runs,
        "ratio_now_over_before": {k: round(runs["now"][k] / runs["before"][k], 2)
                                  for k in ("wall_s", "features_s", "indexed_vectors",
                                            "query_vectors")},
        "per_frame_ms_one_core": per_frame_ms(frames),
        "frames_timed": len(frames),
    }
    print(json.dumps(result, indent=2))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
