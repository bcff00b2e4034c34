"""`dvc repro` of the demo default from a clean state, timed stage by stage.

Clones the repository's committed HEAD into a scratch folder (no data, no DVC cache, no ASR
journals, no model cache: a fresh machine but for the installed packages), writes the offline
plots template as `scripts/install.sh` does, then runs `dvc repro` and stamps each
"Running stage" line DVC prints. A stage's time runs to the next stage's start, so it includes
DVC's own work on its outputs (hashing, caching). Results: total, each stage's seconds and
share, and the run's headline figures.

    python bench/demo_e2e.py [--out bench/results/demo_e2e.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import write_results

REPO = Path(__file__).resolve().parents[1]
STAGE = re.compile(rb"Running stage '([^']+)'")


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def timed_repro(workdir: Path, log_path: Path) -> tuple[float, list[tuple[str, float]]]:
    """Run `dvc repro` in `workdir`; (total seconds, [(stage, start offset)])."""
    starts: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["dvc", "repro"], cwd=workdir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        pending = b""
        while chunk := proc.stdout.read1(65536):
            log.write(chunk)
            pending += chunk
            # tqdm redraws with \r: stamp a stage line as soon as it is whole
            *lines, pending = re.split(rb"[\r\n]", pending)
            for line in lines:
                m = STAGE.search(line)
                if m:
                    starts.append((m.group(1).decode(), time.perf_counter() - t0))
        rc = proc.wait()
    total = time.perf_counter() - t0
    if rc:
        raise SystemExit(f"dvc repro failed ({rc}); log: {log_path}")
    return total, starts


def _headline(workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("asr", "pretrain", "eval"):
        path = workdir / "metrics" / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    details = workdir / "metrics" / "details" / "asr.json"
    if details.exists():
        out["asr_real_time_factor"] = json.loads(details.read_text()).get("real_time_factor")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/demo_e2e.json")
    ap.add_argument("--keep", help="clone here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    if _git("status", "--porcelain", "--untracked-files=no"):
        print("note: uncommitted changes are not part of the run (it clones HEAD)",
              file=sys.stderr)
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tvts-e2e-"))
    work = scratch / "tvts"
    if work.exists():
        shutil.rmtree(work)
    _git("clone", "--quiet", "--no-hardlinks", str(REPO), str(work))
    subprocess.run([sys.executable, "-m", "tvts", "reports", "setup"], cwd=work, check=True,
                   env={**os.environ, "PYTHONPATH": str(work)})
    log = scratch / "repro.log"
    total, starts = timed_repro(work, log)
    stages = {}
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else total
        stages[name] = {"s": round(end - start, 1), "share": round((end - start) / total, 3)}
    result = {"commit": _git("rev-parse", "HEAD", cwd=work), "cores": os.cpu_count(),
              "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() - total)),
              "total_s": round(total, 1), "before_first_stage_s": round(starts[0][1], 1)
              if starts else None, "stages": stages, "headline": _headline(work)}
    out = Path(args.out)
    write_results(out, result)
    print(json.dumps({k: result[k] for k in ("total_s", "stages")}, indent=1))
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
