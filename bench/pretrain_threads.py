"""The pretrain stage's first steps on the demo data under different CPU thread budgets and
precisions: what the loader workers' competition for the cores costs.

Runs the real stage (`tvts.stages.pretrain.run`, the workspace's params.yaml and its
`data/dedup/videos.parquet` + `data/asr/words.parquet` + `data/pack`, so `dvc repro pack`
first) for
`--steps` optimiser steps in a fresh process per variant, into a scratch folder. A variant
sets torch's intra-op threads before the stage starts; the trainer's own budget (cores less
loader workers) only lowers them, so `threads: 2` with `budget: off` is the old behaviour.

    python bench/pretrain_threads.py [--steps 80] [--out bench/results/pretrain_threads.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import write_results

REPO = Path(__file__).resolve().parents[1]
# `pack`: frames from the pack stage's JPEG shards (data/pack, `dvc repro pack` first) or
# decoded from the videos per clip
VARIANTS: list[dict[str, Any]] = [
    {"name": "2 threads beside 2 workers, fp32 (before)", "threads": 2, "budget": False,
     "precision": "fp32", "pack": False},
    {"name": "2 threads beside 2 workers, bf16", "threads": 2, "budget": False,
     "precision": "bf16", "pack": False},
    {"name": "budget: 1 thread beside 2 workers, fp32", "threads": 2, "budget": True,
     "precision": "fp32", "pack": False},
    {"name": "budget: 1 thread beside 2 workers, bf16", "threads": 2,
     "budget": True, "precision": "bf16", "pack": False},
    {"name": "2 threads, no workers, bf16", "threads": 2, "budget": True, "precision": "bf16",
     "loader_workers": 0, "pack": False},
    {"name": "budget: 1 thread beside 2 workers, bf16, packed frames (now, on this CPU)",
     "threads": 2, "budget": True, "precision": "bf16", "pack": True},
]


def child(variant: dict[str, Any], steps: int, out: str) -> dict[str, Any]:
    import torch
    import yaml

    from tvts.config import resolve
    from tvts.stages import pretrain
    from tvts.train import loop
    from tvts.train.cpu import compute_threads

    torch.set_num_threads(variant["threads"])
    if not variant["budget"]:
        loop.thread_budget = lambda *a, **k: _unchanged()  # type: ignore[assignment]
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    section = raw.setdefault("pretrain", {})
    section["precision"] = variant["precision"]
    raw.setdefault("pack", {})["enabled"] = variant["pack"]
    if "loader_workers" in variant:
        section["loader_workers"] = variant["loader_workers"]
    params = resolve(raw)
    t0 = time.perf_counter()
    pretrain.run(params, out_dir=Path(out), metrics_path=Path(out) / "metrics.json",
                 live_dir=None, report_dir=Path(out) / "report", max_steps=steps)
    workers = params.pretrain.loader_workers
    return {"seconds": round(time.perf_counter() - t0, 1), "loader_workers": workers,
            "threads_during_training": min(variant["threads"], compute_threads(workers))
            if variant["budget"] else variant["threads"]}


def _unchanged() -> Any:
    import contextlib

    return contextlib.nullcontext(None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--out", default="bench/results/pretrain_threads.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(child(job["variant"], job["steps"], job["out"])), flush=True)
        return
    if not (REPO / "data" / "dedup" / "videos.parquet").exists():
        raise SystemExit("no demo data: run `dvc repro pack` first")
    rows = []
    for variant in VARIANTS:
        with tempfile.TemporaryDirectory() as tmp:
            job = {"variant": variant, "steps": args.steps, "out": tmp}
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                                  cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            rows.append({**variant, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["speedup_vs_before"] = round(base / r["seconds"], 3)
    result = {"cores": os.cpu_count(), "steps": args.steps,
              "note": "seconds: the whole stage call for that many steps (start-up included)",
              "variants": rows}
    write_results(args.out, result)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
