"""An ablation grid end to end, timed: `tvts ablate <grid>` on the workspace (what is not done
yet), then again (nothing to run: what a rerun costs), with every cell's stage time and the
runner's share beside it.

    dvc repro                                             # the workspace's data, once
    python bench/ablation_grid.py ablations/objectives.yaml
        [--out bench/results/ablation_objectives.json]

The JSON: the grid's wall time, each cell's `dvc repro` time and its whole time (worktree,
linking, `dvc exp save`, ledger: the runner's overhead is the difference), the rerun's wall
time and how many cells it ran, and the table (index.md) the grid wrote.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from results_io import machine, write_results


def _ablate(grid: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tvts", "ablate", grid], capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"tvts ablate {grid} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - t0, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    name = Path(args.grid).stem
    wall, log = _ablate(args.grid)
    rerun_wall, rerun_log = _ablate(args.grid)
    folder = Path("reports/ablations") / name
    cells = json.loads((folder / "cells.json").read_text())
    ran_first = [ln for ln in log.splitlines() if ": done in " in ln]
    stages = sum(c["stages_s"] for c in cells)
    total = sum(c["total_s"] for c in cells)
    result = {
        "machine": machine(),
        "grid": args.grid,
        "command": f"python bench/ablation_grid.py {args.grid}",
        "first_run": {"wall_s": round(wall, 1), "cells_run": len(ran_first),
                      "log_tail": log.splitlines()[-3:]},
        "rerun": {"wall_s": round(rerun_wall, 1),
                  "summary": next((ln for ln in rerun_log.splitlines() if "cell(s)" in ln), "")},
        "cells": [{k: c[k] for k in ("cell", "experiment", "stages_s", "total_s", "figures")}
                  | {"overhead_s": round(c["total_s"] - c["stages_s"], 2),
                     "overhead_share": round((c["total_s"] - c["stages_s"]) / c["stages_s"], 4)}
                  for c in cells],
        "overhead": {"per_cell_mean_s": round((total - stages) / len(cells), 2),
                     "share_of_stage_time": round((total - stages) / stages, 4),
                     "max_share": round(max((c["total_s"] - c["stages_s"]) / c["stages_s"]
                                            for c in cells), 4)},
        "table_md": (folder / "index.md").read_text(),
    }
    out = write_results(args.out or f"bench/results/ablation_{name}.json", result)
    print(f"{out}: {len(cells)} cells, first run {wall / 60:.1f} min, rerun {rerun_wall:.1f} s, "
          f"runner overhead {result['overhead']['share_of_stage_time']:.1%} of stage time")


if __name__ == "__main__":
    main()
