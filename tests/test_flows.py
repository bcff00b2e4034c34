"""The Prefect layer for real: a `prefect server start` on 127.0.0.1, the deployment served
from a subprocess, runs triggered with `prefect deployment run tvts/full-pipeline`, states,
task runs, logs and artifacts read back from the server's API. Servers are stopped by PID."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tvts.config import ParamsError
from tvts.experiments.workspace import apply_overrides, checked_params, stage_error

from .conftest import REPO, free_port, scratch_project

pytestmark = pytest.mark.integration
STAGES = ["sources", "corpus", "asr", "validate", "downstream", "dedup", "pack", "pretrain",
          "post_pretrain", "evaluate", "reports"]
ALWAYS_RUN = {"sources", "reports"}  # dvc.yaml: always_changed


# ---------------------------------------------------------------- units
def test_overrides_apply_and_are_checked(tmp_path):
    raw = {"profile": "micro", "sort": {"lambda": 2.0}}
    out = apply_overrides(raw, {"sort.lambda": 0.5, "+corpus.demo.num_videos": 8})
    assert out["sort"]["lambda"] == 0.5 and out["corpus"]["demo"]["num_videos"] == 8
    assert raw["sort"]["lambda"] == 2.0  # the input is left alone
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="Did you mean 'lambda'"):
        checked_params(tmp_path, {"sort.lamda": 1})
    with pytest.raises(ParamsError, match="not a dotted params key"):
        apply_overrides(raw, {"sort..x": 1})


def test_change_against_the_previous_run(tmp_path):
    from flows.pipeline import change_table, flat_metrics

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps(
        {"ssv2": {"linear": {"random": {"top1": 20.0}}}, "note": "text"}))
    now = flat_metrics(tmp_path)
    assert now == {"eval.json:ssv2.linear.random.top1": 20.0}
    table = change_table({"eval.json:ssv2.linear.random.top1": 25.0}, now)
    assert "| eval.json:ssv2.linear.random.top1 | 25.0 | 20.0 | -5 |" in table
    assert change_table(now, now) == "(no change)"


def test_stage_error_keeps_the_stages_own_message():
    out = ("Running stage 'downstream':\n> python -m tvts stage downstream\n"
           "error: downstream.sets.x = '/nope': not a directory.\n"
           "ERROR: failed to reproduce 'downstream': failed to run: python -m tvts stage "
           "downstream, exited with 2\n")
    assert stage_error(out) == "error: downstream.sets.x = '/nope': not a directory."
    tb = "Traceback (most recent call last):\n  File x\nValueError: boom\nERROR: failed\n"
    assert stage_error(tb) == "ValueError: boom"


# ---------------------------------------------------------------- a real server
def _env(api: str, home: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
            "PREFECT_LOGGING_LEVEL": "INFO", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(1)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A scratch project (micro profile) + a Prefect server + `python -m flows serve`."""
    root = scratch_project(tmp_path_factory.mktemp("project"), ("tvts", "flows", "reviews"))
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _env(api, home)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    logs = tmp_path_factory.mktemp("logs")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
         str(port)], env=env, stdout=(logs / "server.log").open("w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    serving = None
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, 240, "prefect server did not come up")
        serving = subprocess.Popen([sys.executable, "-m", "flows", "serve"], cwd=root, env=env,
                                   stdout=(logs / "serve.log").open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)

        def deployed() -> bool:
            r = httpx.get(f"{api}/deployments/name/tvts/full-pipeline", timeout=5)
            return r.status_code == 200

        _wait(deployed, 120, "the deployment was not served")
        yield root, api, env
    finally:
        if serving is not None:
            _stop(serving)
        _stop(server)


def _trigger(root: Path, env: dict[str, str], **params) -> str:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "prefect", "deployment", "run", "tvts/full-pipeline",
           "--watch", "--watch-interval", "2"]
    for k, v in params.items():
        cmd += ["--param", f"{k}={json.dumps(v)}"]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout + done.stderr
    return found.group(1)


def _run_info(api: str, run_id: str) -> tuple[str, dict[str, str], str]:
    """(flow run state, task name -> state, all logs)."""
    state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"]
    tasks = httpx.post(f"{api}/task_runs/filter",
                       json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    logs = httpx.post(f"{api}/logs/filter",
                      json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
    return (state, {t["name"]: t["state"]["type"] for t in tasks},
            "\n".join(lg["message"] for lg in logs))


def _stage_tasks(tasks: dict[str, str]) -> dict[str, str]:
    return {re.sub(r"-\d+$", "", k): v for k, v in tasks.items()}


def test_full_pipeline_runs_then_skips_then_an_override_is_an_experiment(served):
    root, api, env = served
    first = _trigger(root, env)
    state, tasks, logs = _run_info(api, first)
    assert state == "COMPLETED", logs
    stage_tasks = _stage_tasks(tasks)
    assert set(stage_tasks) == set(STAGES) and set(stage_tasks.values()) == {"COMPLETED"}
    assert "stage pretrain ran" in logs
    artifacts = httpx.post(f"{api}/artifacts/filter",
                           json={"artifacts": {"flow_run_id": {"any_": [first]}}}).json()
    by_key = {a["key"]: a for a in artifacts}
    assert "metrics/eval.json" in by_key["tvts-metrics"]["data"]
    assert "leakage review" in by_key["tvts-reports"]["data"]
    assert "reports/index.html" in by_key["tvts-reports"]["data"]

    again = _trigger(root, env)
    state, tasks, logs = _run_info(api, again)
    assert state == "COMPLETED"
    # the listing of the sources and the reports index run every time (cheap); the listing
    # changed nothing, so no other stage ran
    assert "stage sources ran" in logs and "stage reports ran" in logs
    assert logs.count("up to date, skipped") == len(STAGES) - len(ALWAYS_RUN), logs
    second = httpx.post(f"{api}/artifacts/filter",
                        json={"artifacts": {"flow_run_id": {"any_": [again]}}}).json()
    metrics_md = next(a["data"] for a in second if a["key"] == "tvts-metrics")
    assert "Change against the previous run\n\n(no change)" in metrics_md

    before = (root / "params.yaml").read_text()
    # the stages through pretraining (what the override changes first; the later ones run
    # the same way, and tests/test_pipeline_integration.py's grid runs them in worktrees)
    exp = _trigger(root, env, overrides={"sort.lambda": 0.5}, experiment_name="lambda-half",
                   stages=STAGES[:STAGES.index("pretrain") + 1])
    state, tasks, logs = _run_info(api, exp)
    assert state == "COMPLETED", logs
    assert "stage pretrain ran" in logs
    # the stages before pretraining are unchanged: skipped, their outputs checked out or
    # copied (before: asr, validate, dedup and pack ran again, resumed from copied journals)
    for stage in ("corpus", "asr", "validate", "downstream", "dedup", "pack"):
        assert f"stage {stage}: up to date" in logs, (
            stage, [ln for ln in logs.splitlines() if ln.startswith("stage ")])
    assert (root / "params.yaml").read_text() == before
    # the persisted outputs (journals, shards, feature caches) were linked, not copied
    placed = re.search(r"(\d+) output file\(s\) linked, (\d+) copied", logs)
    assert placed and int(placed.group(1)) > int(placed.group(2)), logs
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root,
                           env=env, capture_output=True, text=True, check=True).stdout
    runs = {e["name"]: e for commit in json.loads(shown)
            for e in (commit.get("experiments") or [])}
    assert "lambda-half" in runs
    data = runs["lambda-half"]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["sort"]["lambda"] == 0.5
    assert "val_sort_acc" in data["metrics"]["metrics/pretrain.json"]["data"]
    # the experiment's run record, as its dvc.lock names it in the shared DVC cache: lambda
    # weighed the sort loss
    rev = runs["lambda-half"]["revs"][0]["rev"]
    lock = yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=root,
                                         capture_output=True, text=True, check=True).stdout)
    assert lock["stages"]["pretrain"]["params"]["params.yaml"]["sort"]["lambda"] == 0.5
    md5 = next(o["md5"] for o in lock["stages"]["pretrain"]["outs"]
               if o["path"] == "metrics/details/pretrain.json")
    pre = json.loads((root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text())
    assert pre["train_loss"] == pytest.approx(
        pre["train_loss_contrastive"] + 0.5 * pre["train_loss_sort"], rel=1e-3)
    assert not subprocess.run(["git", "status", "--porcelain", "params.yaml"], cwd=root,
                              capture_output=True, text=True).stdout.strip()


def test_bad_override_fails_before_any_stage(served):
    root, api, env = served
    run = _trigger(root, env, overrides={"sort.lamda": 1})
    state, tasks, logs = _run_info(api, run)
    assert state == "FAILED" and not tasks
    assert "Did you mean 'lambda'" in logs


def test_a_failing_stage_fails_its_task_with_the_stages_message(served):
    root, api, env = served
    run = _trigger(root, env, overrides={"downstream.sets": {"ssv2": "/nonexistent/clips"}},
                   stages=["corpus", "downstream"])
    state, tasks, logs = _run_info(api, run)
    assert state == "FAILED"
    assert _stage_tasks(tasks) == {"corpus": "COMPLETED", "downstream": "FAILED"}
    assert "/nonexistent/clips" in logs and "not a directory" in logs
    assert logs.count("stage downstream failed") == 1  # a user error is not retried


def test_dask_fan_out_gives_the_in_process_words(served, tmp_path):
    """ASR by shard on a local Dask cluster of 2 workers (the flow's fan-out, then the
    stage's merge) against the stage run whole: the same words table."""
    root, _api, env = served
    if not (root / "data" / "corpus" / "videos.parquet").exists():
        subprocess.run([sys.executable, "-m", "dvc", "repro", "corpus"], cwd=root, env=env,
                       check=True, capture_output=True)
    out = tmp_path / "fanout.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "asr_fanout_bench.py"),
                           "--videos", "3", "--workers", "2", "--out", str(out)], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    # the same words of the same videos; the timings a few Whisper steps (0.02 s) at most
    # apart: CTranslate2's int8 kernels are not bit-reproducible across process layouts on
    # every CPU (measured on an AMD EPYC: 0.02-0.04 s; identical on the earlier machine)
    assert result["words"] > 0 and result["same_words"], result
    assert result["max_time_diff_s"] <= 0.1 and result["max_confidence_diff"] <= 0.1, result
    assert result["merge_videos_resumed"] == 3  # the parts did all the work


def test_shards_option_is_checked():
    from tvts.cli import main

    assert main(["stage", "corpus", "--shards", "0/2", "--params", str(REPO / "params.yaml")]
                ) == 2
    assert main(["stage", "asr", "--shards", "2/2", "--params", str(REPO / "params.yaml")]
                ) == 2
