"""`tvts ablate <grid.yaml>`: run an ablation grid's cells as DVC experiments and summarise them.

Each cell (variant x seed) runs `dvc repro <targets>` in a temporary worktree of the workspace
(tvts.experiments.workspace: its code, its data linked, so only the stages the cell's params
change run) and is kept with `dvc exp save` as `<grid>-<variant>-s<seed>-<key>`, where `key`
hashes what decides the result: the cell's resolved params, the pipeline's code (the stages'
code deps in dvc.yaml, committed or not) and the data stages' outputs (their hashes in
dvc.lock). A cell whose experiment exists under that name and whose figures are in the
grid's ledger is done:
a rerun trains nothing, a killed grid runs only what it had not finished, and a change of
code, data or params runs the cells again (under new names, the old ones stay in
`dvc exp show`).

Outputs, in reports/ablations/<grid>/: cells.jsonl (the ledger: one line per finished cell),
cells.csv and cells.json (every cell's figures), index.md and index.html (the table),
logs/<cell>.log (each cell's `dvc repro` output).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tvts import paths
from tvts.config import ParamsError, resolve
from tvts.errors import UserError
from tvts.experiments.grid import Cell, Grid, cell_figures, load_grid
from tvts.experiments.tables import write_summary
from tvts.experiments.workspace import (
    apply_overrides,
    dvc_env,
    experiment_workspace,
    process_alive,
    save_experiment,
    stage_error,
    sweep_stale_workspaces,
)
from tvts.storage import atomic_write_text

ABLATIONS_DIR = paths.ABLATIONS_REPORTS
# stages whose outputs the cells make themselves; every other stage's are the shared data
TRAINED_STAGES = ("pretrain", "post_pretrain", "evaluate", "reports")


@dataclass
class CellRecord:
    """A finished cell: what it ran and what it measured."""

    cell: str
    experiment: str
    variant: str
    seed: int
    key: str
    overrides: dict[str, Any]
    # encoder -> column title -> value (tvts.experiments.grid.cell_figures)
    figures: dict[str, dict[str, float]]
    stages_s: float  # the cell's `dvc repro` (its stages, and DVC's checks around them)
    total_s: float  # the whole cell: worktree, linking, repro, `dvc exp save`, ledger
    finished: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def overhead_s(self) -> float:
        return self.total_s - self.stages_s


@dataclass
class GridRun:
    ran: list[CellRecord]
    skipped: list[str]
    records: list[CellRecord]
    summary: Path
    wall_s: float


class CellFailed(RuntimeError):
    """A cell's `dvc repro` failed: reported, and the grid's other cells run on."""


def grid_dir(root: Path, grid: Grid) -> Path:
    return root / ABLATIONS_DIR / grid.name


# ---------------------------------------------------------------- what decides a result
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_fingerprint(root: Path) -> str:
    """The pipeline's code as DVC sees it: every file under the stages' deps in dvc.yaml that
    git tracks or would track (committed or not; data files are git-ignored), with its
    contents, and dvc.yaml itself. Code no stage depends on (this runner, docs) is not in it."""
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    deps = sorted({d for s in stages.values() for d in s.get("deps", [])
                   if isinstance(d, str) and "${" not in d} | {"dvc.yaml"})
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "--", *deps],
                            cwd=root, capture_output=True, text=True, check=True).stdout
    h = hashlib.sha256()
    for rel in sorted(filter(None, set(listed.split("\0")))):
        path = root / rel
        if path.is_file():
            h.update(rel.encode() + b"\0" + _sha(path.read_bytes()).encode() + b"\n")
    return h.hexdigest()


def data_fingerprint(root: Path) -> str:
    """The data stages' outputs as dvc.lock records them (the cells share these)."""
    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        raise UserError(f"{lock_path} missing: the grid's cells run on the workspace's data; "
                        "run `dvc repro` first (the cells then rerun only the stages their "
                        "params change)")
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    outs = {name: [(o["path"], o.get("md5") or o.get("hash")) for o in s.get("outs", [])]
            for name, s in sorted(stages.items()) if name not in TRAINED_STAGES}
    return _sha(json.dumps(outs, sort_keys=True).encode())


def cell_params(root: Path, cell: Cell) -> dict[str, Any]:
    """params.yaml with the cell's overrides, checked as every stage will read it."""
    raw = yaml.safe_load((root / "params.yaml").read_text()) or {}
    try:
        merged = apply_overrides(raw, cell.overrides)
        resolve(merged, f"grid {cell.grid.name}, cell {cell.label}")
    except ParamsError as e:
        raise UserError(str(e)) from None
    return merged


def cell_key(params: dict[str, Any], code: str, data: str, targets: list[str]) -> str:
    resolved = resolve(params).to_dict()
    blob = json.dumps({"params": resolved, "code": code, "data": data, "targets": targets},
                      sort_keys=True, default=str)
    return _sha(blob.encode())[:10]


# ---------------------------------------------------------------- ledger and experiments
class Ledger:
    """cells.jsonl: one JSON line per finished cell, appended and flushed to disk only after
    its experiment is saved (a killed run leaves no line for an unfinished cell)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict[str, CellRecord]:
        """key -> record (the last line of a key wins); a torn last line is ignored."""
        out: dict[str, CellRecord] = {}
        if not self.path.is_file():
            return out
        for line in self.path.read_text().splitlines():
            try:
                rec = CellRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue
            out[rec.key] = rec
        return out

    def append(self, record: CellRecord) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(asdict(record), sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())


def existing_experiments(root: Path) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--all-commits",
                           "--name-only"], cwd=root, capture_output=True, text=True,
                          env=dvc_env())
    if done.returncode:
        raise UserError(f"dvc exp list failed in {root}: {stage_error(done.stderr)}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


# ---------------------------------------------------------------- running
def run_cell(root: Path, cell: Cell, params: dict[str, Any], key: str, log_dir: Path,
             save_lock: threading.Lock, say: Callable[[str], Any]) -> CellRecord:
    t0 = time.perf_counter()
    name = f"{cell.label}-{key[:6]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{cell.label}.log"
    with experiment_workspace(root, params, say) as work:
        t1 = time.perf_counter()
        with open(log_path, "w") as log:
            done = subprocess.run([sys.executable, "-m", "dvc", "repro", *cell.grid.targets],
                                  cwd=work, stdout=log, stderr=subprocess.STDOUT, text=True,
                                  env=dvc_env())
        stages_s = time.perf_counter() - t1
        if done.returncode:
            raise CellFailed(f"cell {cell.label}: `dvc repro` failed: "
                             f"{stage_error(log_path.read_text())} (log: {log_path})")
        details_path = work / paths.details_of("evaluate")
        if not details_path.is_file():
            raise CellFailed(f"cell {cell.label}: {paths.details_of('evaluate')} missing after "
                             f"`dvc repro {' '.join(cell.grid.targets)}`: the grid's targets "
                             "must run the evaluate stage")
        figures = cell_figures(json.loads(details_path.read_text()), cell.grid)
        pretrain = _read_json(work / paths.metrics_of("pretrain"))
        with save_lock:  # one `dvc exp save` at a time: they share the git refs
            save_experiment(work, name, root, _ran_stages(work, cell.grid.targets))
    return CellRecord(cell=cell.label, experiment=name, variant=cell.variant.name,
                      seed=cell.seed, key=key, overrides=cell.overrides, figures=figures,
                      stages_s=round(stages_s, 2), total_s=round(time.perf_counter() - t0, 2),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      extra={"pretrain": pretrain})


def _ran_stages(work: Path, targets: list[str]) -> list[str]:
    """The targets and every stage upstream of them (what `dvc repro <targets>` ran or
    checked), in dvc.yaml's order."""
    stages = (yaml.safe_load((work / "dvc.yaml").read_text()) or {}).get("stages", {})
    makers = {str(next(iter(o)) if isinstance(o, dict) else o): name
              for name, s in stages.items()
              for kind in ("outs", "metrics", "plots") for o in s.get(kind, [])}
    wanted, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name in wanted or name not in stages:
            continue
        wanted.add(name)
        for dep in stages[name].get("deps", []):
            todo += [maker for out, maker in makers.items()
                     if dep == out or dep.startswith(out.rstrip("/") + "/")]
    return [name for name in stages if name in wanted]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_grid(grid_path: str | Path, root: Path = Path("."), jobs: int = 1,
             summary_only: bool = False, say: Callable[[str], Any] = print) -> GridRun:
    """Run the grid's cells that are not done (`jobs` at a time, each in its own worktree),
    then write the summary from every done cell."""
    t0 = time.perf_counter()
    root = root.resolve()
    grid = load_grid(grid_path)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: at least 1")
    out_dir = grid_dir(root, grid)
    with _grid_lock(out_dir / ".lock", grid.name):
        stale = sweep_stale_workspaces(root)
        if stale:
            say(f"removed {stale} experiment worktree(s) of killed runs")
        ledger = Ledger(out_dir / "cells.jsonl")
        code, data = code_fingerprint(root), data_fingerprint(root)
        plan = []
        for cell in grid.cells():
            params = cell_params(root, cell)
            plan.append((cell, params, cell_key(params, code, data, grid.targets)))
        recorded = ledger.load()
        experiments = existing_experiments(root)
        # a cell another grid ran with the same key (same params, code, data) is reused
        others = _other_grids_records(out_dir.parent, grid.name)
        for cell, _, key in plan:
            other = others.get(key)
            if key not in recorded and other is not None and other.experiment in experiments:
                ledger.append(replace(other, cell=cell.label, variant=cell.variant.name,
                                      seed=cell.seed, overrides=cell.overrides,
                                      extra={**other.extra, "reused_from": other.cell}))
                say(f"{cell.label}: the same run as {other.cell}: its experiment "
                    f"{other.experiment} is reused")
        recorded = ledger.load()

        def done(key: str) -> bool:
            return key in recorded and recorded[key].experiment in experiments

        todo = [(c, p, k) for c, p, k in plan if not done(k)]
        skipped = [c.label for c, _, k in plan if done(k)]
        say(f"grid {grid.name}: {len(plan)} cell(s), {len(skipped)} done, "
            f"{len(todo)} to run" + (" (summary only)" if summary_only else ""))
        ran: list[CellRecord] = []
        failed: list[str] = []
        if todo and not summary_only:
            ran, failed = _run_cells(root, todo, ledger, out_dir / "logs", jobs, say, code)
        finished = ledger.load()
        records = [finished[k] for _, _, k in plan if k in finished]
        summary = write_summary(grid, records, out_dir)
        _write_cells(records, out_dir)
        _refresh_reports_index(root, say)
    if failed:
        raise UserError(f"grid {grid.name}: {len(failed)} cell(s) failed (the table has the "
                        f"others; a rerun runs only what is not done):\n" + "\n".join(failed))
    return GridRun(ran, skipped, records, summary, time.perf_counter() - t0)


def _other_grids_records(ablations: Path, this: str) -> dict[str, CellRecord]:
    """key -> a finished cell of another grid's ledger in this workspace."""
    out: dict[str, CellRecord] = {}
    for path in sorted(ablations.glob("*/cells.jsonl")):
        if path.parent.name != this:
            for key, rec in Ledger(path).load().items():
                if "reused_from" not in rec.extra:
                    out.setdefault(key, rec)
    return out


def _run_cells(root: Path, todo: list[tuple[Cell, dict[str, Any], str]], ledger: Ledger,
               log_dir: Path, jobs: int, say: Callable[[str], Any], code: str | None = None
               ) -> tuple[list[CellRecord], list[str]]:
    """The cells, `jobs` at a time; a cell that fails is reported and the others run on
    (returns the finished records and the failures). `code`: the code fingerprint the cells
    are keyed by; a cell is not started once the workspace's code differs from it (it would
    run other code than its key says)."""
    save_lock = threading.Lock()

    def one(item: tuple[Cell, dict[str, Any], str]) -> CellRecord | str:
        cell, params, key = item
        if code is not None and code_fingerprint(root) != code:
            failure = (f"cell {cell.label}: not run: the stages' code changed since the grid "
                       "started (run the grid again: the cells are keyed by the code)")
            say(failure)
            return failure
        say(f"{cell.label}: running ({', '.join(f'{k}={v}' for k, v in cell.overrides.items())})")
        try:
            rec = run_cell(root, cell, params, key, log_dir, save_lock, say)
        except CellFailed as e:
            say(str(e))
            return str(e)
        ledger.append(rec)
        say(f"{cell.label}: done in {rec.total_s:.0f} s (stages {rec.stages_s:.0f} s), "
            f"experiment {rec.experiment}")
        return rec

    if jobs == 1:
        results = [one(item) for item in todo]
    else:
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(one, todo))
    return ([r for r in results if isinstance(r, CellRecord)],
            [r for r in results if isinstance(r, str)])


class _grid_lock:
    """One run of a grid at a time in a workspace: a second one would run the same cells."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name

    def __enter__(self) -> _grid_lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = self.path.read_text().strip()
            if holder.isdigit() and process_alive(int(holder)):
                raise UserError(f"grid {self.name} is being run by process {holder} in this "
                                f"workspace; wait for it, or stop it (its finished cells are "
                                f"kept) and run again") from None
            self.path.unlink(missing_ok=True)  # a killed run's
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _write_cells(records: list[CellRecord], out_dir: Path) -> None:
    """cells.json (every record) and cells.csv (one row per cell, encoder and column)."""
    atomic_write_text(out_dir / "cells.json",
                      json.dumps([asdict(r) for r in records], indent=2, sort_keys=True) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["cell", "experiment", "variant", "seed", "encoder", "column", "value",
                     "stages_s", "total_s"])
    for r in records:
        for encoder, cols in sorted(r.figures.items()):
            for col, value in cols.items():
                writer.writerow([r.cell, r.experiment, r.variant, r.seed, encoder, col, value,
                                 r.stages_s, r.total_s])
    atomic_write_text(out_dir / "cells.csv", buf.getvalue())


def _refresh_reports_index(root: Path, say: Callable[[str], Any]) -> None:
    """reports/index.html again, so it links the grid's table (the reports stage's page)."""
    from tvts.config import load_params
    from tvts.stages import reports

    try:
        cwd = os.getcwd()
        os.chdir(root)
        try:
            say(reports.run(load_params(root / "params.yaml")))
        finally:
            os.chdir(cwd)
    except (OSError, ParamsError, UserError) as e:
        say(f"reports index not refreshed: {e}")
