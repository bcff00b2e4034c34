"""The `tvts` flow: the DVC stages in pipeline order, one Prefect task per stage.

DVC stays the source of truth for what re-runs: each task is `dvc repro --single-item <stage>`,
so a stage whose inputs did not change is skipped (and its task says so). Prefect adds the
run's states, durations, logs and artifacts, retries of transient failures, and the deployment
(`python -m flows serve`).

A run with `overrides` (dotted params keys, as `dvc exp run -S` takes them) runs in a temporary
git worktree with the workspace's code (uncommitted changes included, as `dvc exp run`), its
DVC cache, and its persisted outputs hard-linked (no data copied), and is kept as a DVC
experiment (`dvc exp save`), so it shows in `dvc exp show` while the working copy and
params.yaml stay as they were. Bad overrides fail the run before any stage, with the params
error the CLI gives.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tvts import paths
from tvts.config import ParamsError
from tvts.experiments.workspace import (
    checked_params,
    experiment_workspace,
    run_captured,
    save_experiment,
    stage_error,
)

ROOT = Path(__file__).resolve().parents[1]  # the project root this flow is served from
USER_ERROR_EXIT = 2  # `python -m tvts` exits 2 on a user error (bad params, a bad file)
REPORTS = {"every report of the run, with the headline metrics": paths.REPORTS_INDEX,
           "ASR validation (Data Docs)": paths.VALIDATION_REPORT / "index.html",
           "leakage review": paths.LEAKAGE_REPORT / "index.html",
           "evaluation summary": paths.EVAL_SUMMARY,
           "training curves": paths.report_dir("pretrain") / "curves.png",
           "evaluation figures": paths.EVAL_FIGURES}


class StageFailed(RuntimeError):
    """A stage failed for a reason that may pass (a lost worker, S3): retried."""


class UserInputError(RuntimeError):
    """Bad params or a bad file: retrying cannot help."""


def pipeline_stages(root: Path) -> list[str]:
    """The stage names of dvc.yaml, in the order they are written (the pipeline order)."""
    return list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


def _not_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the stage failed on the user's input."""
    try:
        state.result()
    except UserInputError:
        return False
    except Exception:
        return True
    return True


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_not_user_error,
      task_run_name="{name}")
def run_stage(name: str, workspace: str) -> str:
    """`dvc repro --single-item <name>`: runs the stage when DVC says its inputs changed."""
    log = get_run_logger()
    t0 = time.perf_counter()
    done = run_captured([sys.executable, "-m", "dvc", "repro", "--single-item", name],
                        Path(workspace))
    output = done.stdout + done.stderr
    if done.returncode:
        message = stage_error(output)
        log.error("stage %s failed:\n%s", name, message)
        user = re.search(rf"exited with {USER_ERROR_EXIT}\b", output) is not None
        raise (UserInputError if user else StageFailed)(f"stage {name}: {message}")
    if re.search(r"didn't change, skipping|is cached - skipping", output):
        log.info("stage %s: up to date, skipped (DVC: its inputs did not change)", name)
        return "skipped"
    summary = [ln for ln in done.stdout.splitlines() if ln.startswith(f"{name}: ")]
    log.info("stage %s ran in %.0f s%s", name, time.perf_counter() - t0,
             f": {summary[-1][len(name) + 2:]}" if summary else "")
    return "ran"


def task_runner(runner: str, parts: int) -> Any:
    """`local`: threads in this process (each part is its own subprocess); `dask`: a local
    Dask cluster of `parts` single-threaded worker processes; `tcp://host:port` (or any Dask
    scheduler address): that cluster, whose workers must see this workspace at the same path
    (a shared file system)."""
    if runner == "local":
        return ThreadPoolTaskRunner(max_workers=parts)
    from prefect_dask import DaskTaskRunner

    if runner == "dask":
        return DaskTaskRunner(cluster_kwargs={"n_workers": parts, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    if "://" in runner:
        return DaskTaskRunner(address=runner)
    raise UserInputError(f"runner {runner!r}: expected local, dask, or a Dask scheduler "
                         "address such as tcp://10.0.0.5:8786")


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_not_user_error,
      task_run_name="{stage}[{part}/{parts}]")
def run_part(stage: str, part: int, parts: int, workspace: str) -> str:
    """One part of a stage's per-video work: `tvts stage <stage> --shards part/parts`, whose
    results land in the shard layout the whole stage resumes from."""
    log = get_run_logger()
    done = run_captured([sys.executable, "-m", "tvts", "stage", stage, "--shards",
                         f"{part}/{parts}"], Path(workspace))
    if done.returncode:
        message = stage_error(done.stdout + done.stderr)
        log.error("%s part %d/%d failed:\n%s", stage, part, parts, message)
        raise (UserInputError if done.returncode == USER_ERROR_EXIT else StageFailed)(
            f"stage {stage} part {part}/{parts}: {message}")
    summary = done.stdout.strip().splitlines()
    log.info("%s", summary[-1] if summary else f"{stage} part {part}/{parts} done")
    return summary[-1] if summary else ""


@flow(name="tvts-fan-out")
def fan_out(stage: str, parts: int, workspace: str) -> list[str]:
    """Every part of one stage at once, on the flow's task runner."""
    futures = [run_part.submit(stage, i, parts, workspace) for i in range(parts)]
    return [f.result() for f in futures]


def stage_is_stale(stage: str, workspace: Path) -> bool:
    """DVC would run the stage (its inputs, or its outputs, changed)."""
    done = run_captured([sys.executable, "-m", "dvc", "status", "--json", stage], workspace)
    try:
        return bool(json.loads(done.stdout or "{}"))
    except json.JSONDecodeError:
        return True


LAST_RUN = Path(".dvc/tmp/tvts-flow-last-metrics.json")  # git-ignored, per workspace


def flat_metrics(workspace: Path) -> dict[str, Any]:
    """Every number in metrics/*.json as `file:dotted.key` -> value."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = value

    for path in sorted((workspace / "metrics").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for k, v in (data.items() if isinstance(data, dict) else []):
            walk(f"{path.name}:{k}", v)
    return out


def change_table(before: dict[str, Any], now: dict[str, Any]) -> str:
    rows = [(k, before.get(k), now.get(k)) for k in sorted(set(before) | set(now))
            if before.get(k) != now.get(k)]
    if not rows:
        return "(no change)"
    lines = ["| metric | previous run | this run | change |", "|---|---|---|---|"]
    for k, a, b in rows:
        delta = f"{b - a:+.4g}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            else ""
        lines.append(f"| {k} | {'' if a is None else a} | {'' if b is None else b} | {delta} |")
    return "\n".join(lines)


def metrics_markdown(workspace: Path, root: Path) -> str:
    """`dvc metrics show`, the change against the previous flow run on this workspace, and
    against the last commit (`dvc metrics diff`)."""
    dvc = [sys.executable, "-m", "dvc", "metrics"]
    show = run_captured([*dvc, "show", "--md"], workspace).stdout.strip()
    diff = run_captured([*dvc, "diff", "--md"], workspace).stdout.strip()
    last = root / LAST_RUN
    try:
        before = json.loads(last.read_text())
    except (OSError, json.JSONDecodeError):
        before = {}
    now = flat_metrics(workspace)
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_text(json.dumps(now))
    return ("## Metrics\n\n" + (show or "(none)")
            + "\n\n## Change against the previous run\n\n"
            + (change_table(before, now) if before else "(first run)")
            + "\n\n## Change against the last commit\n\n" + (diff or "(no change)") + "\n")


def reports_markdown(workspace: Path) -> str:
    rows = [f"- {label}: `{(workspace / rel).resolve()}`"
            for label, rel in REPORTS.items() if (workspace / rel).exists()]
    return "## Reports\n\n" + ("\n".join(rows) or "(none yet)") + "\n"


@flow(name="tvts", log_prints=True)
def tvts(stages: list[str] | None = None, overrides: dict[str, Any] | None = None,
         experiment_name: str | None = None, shard_parts: int = 1,
         runner: str = "local") -> dict[str, str]:
    """The pipeline: `stages` (default: all, in pipeline order) with params `overrides`
    (dotted keys; a run with overrides is kept as a DVC experiment). With `shard_parts` > 1
    the per-video stages (asr, dedup, evaluate) first run in that many parts at once on `runner`
    (`local`, `dask` for a local Dask cluster, or a Dask scheduler address), then the stage
    merges them."""
    log = get_run_logger()
    root = ROOT
    order = pipeline_stages(root)
    chosen = order if not stages else [s for s in order if s in stages]
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise UserInputError(f"unknown stage(s) {unknown}; the pipeline's stages: {order}")
    if shard_parts < 1:
        raise UserInputError(f"shard_parts = {shard_parts}: must be 1 (no fan-out) or more")
    if shard_parts > 1:
        task_runner(runner, shard_parts)  # a bad runner fails here, before any stage
    try:
        params = checked_params(root, overrides or {})
    except ParamsError as e:
        log.error("%s", e)
        raise UserInputError(str(e)) from None
    results: dict[str, str] = {}

    def run_all(workspace: Path) -> None:
        for name in chosen:
            if shard_parts > 1 and name in paths.SHARDED_STAGES and stage_is_stale(name, workspace):
                fan_out.with_options(task_runner=task_runner(runner, shard_parts))(
                    name, shard_parts, str(workspace))
            results[name] = run_stage(name, str(workspace))
        create_markdown_artifact(key="tvts-metrics", markdown=metrics_markdown(workspace, root),
                                 description="metrics/*.json after this run")
        create_markdown_artifact(key="tvts-reports", markdown=reports_markdown(workspace),
                                 description="where this run's reports are")

    if not overrides:
        run_all(root)
        return results
    with experiment_workspace(root, params, log.info) as work:
        run_all(work)
        name = experiment_name or "prefect-" + time.strftime("%Y%m%d-%H%M%S")
        try:
            save_experiment(work, name, root)
        except RuntimeError as e:
            raise StageFailed(str(e)) from None
        log.info("kept as DVC experiment %s (dvc exp show)", name)
    return results
