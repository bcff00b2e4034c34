"""ASR with and without packing, side by side in one run, through the stage's own corpus
runner: wall time, word error rate against the generator's script, word-start error.

    python bench/asr_packing_bench.py [--videos 48] [--pack 1,4]
        [--out bench/results/asr_packing.json]

Needs the demo corpus (`dvc repro corpus` or `tvts stage corpus`). Each arm transcribes the
same videos from scratch (its own journal folder) with `asr.pack_videos` set to the arm's value.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from results_io import machine, write_results

from tvts.asr.corpus_run import tasks_for, transcribe_corpus
from tvts.asr.scoring import align, demo_reference, start_errors
from tvts.config import load_params
from tvts.tables import frame, read_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--pack", default="1,4", help="asr.pack_videos of each arm")
    ap.add_argument("--out", default="bench/results/asr_packing.json")
    args = ap.parse_args()
    params = load_params(args.params)
    videos = read_table("data/corpus/videos.parquet", "videos")
    videos = videos.filter(videos["source"] == "demo").sort("uri").head(args.videos)
    if videos.is_empty():
        raise SystemExit("no demo videos in data/corpus: run `tvts stage corpus` first")
    tasks = tasks_for(videos, frame([], "subtitles"))
    refs = {r["video_id"]: demo_reference(json.loads(Path(r["uri"]).with_suffix(".json")
                                                     .read_text()))
            for r in videos.iter_rows(named=True)}
    arms = {}
    for n in (int(x) for x in args.pack.split(",")):
        cfg = params.asr.model_copy(update={"pack_videos": n})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = transcribe_corpus(tasks, cfg, params.corpus.s3, params.corpus.cache_dir,
                                       tmp)
            wall = time.perf_counter() - t0
        errors = ref_words = 0
        starts: list[float] = []
        for vid, rec in result.records.items():
            words = rec.get("words", [])
            a = align(refs[vid].words, [w[0] for w in words])
            errors += a.substitutions + a.deletions + a.insertions
            ref_words += a.reference_words
            starts += start_errors(refs[vid].starts, [w[1] for w in words], a)
        arms[f"pack_videos={n}"] = {
            "wall_s": round(wall, 2), "s_per_video": round(wall / len(tasks), 3),
            "wer": round(errors / ref_words, 4), "reference_words": ref_words,
            "median_abs_start_error_s": round(statistics.median(starts), 4) if starts else None,
            "failed": sum(r["status"] == "failed" for r in result.records.values()),
        }
        print(n, arms[f"pack_videos={n}"], flush=True)
    walls = [a["wall_s"] for a in arms.values()]
    write_results(args.out, {
        "machine": machine(), "videos": len(tasks), "engine": params.asr.engine,
        "model": params.asr.model, "threads": params.asr.threads, "arms": arms,
        "speedup_first_over_last": round(walls[0] / walls[-1], 3),
        "note": "model loading included in wall_s (once per arm)"})


if __name__ == "__main__":
    main()
