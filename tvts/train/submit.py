"""Training stages as Slurm jobs (launch.scheduler: slurm), through submitit: the stage submits
one job of nnodes x tasks_per_node tasks, streams task 0's log, waits, and returns rank 0's
summary or fails with the job's error. Preemption and the time limit requeue the job
(submitit's checkpoint/requeue, at most `launch.slurm.max_requeues` times); the requeued job
runs the stage again, which resumes from its last checkpoint exactly as a killed local run
does. A job that fails for an error is not requeued. `submitit-local` runs the same job on this
machine with submitit's local executor (its timeout and requeue included, no cluster).
"""

from __future__ import annotations

import importlib
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvts.config import LaunchConfig, load_params
from tvts.errors import UserError


def tasks_per_node(cfg: LaunchConfig) -> int:
    """nproc_per_node, or with `auto` the GPUs the job asks for (one task without GPUs)."""
    if cfg.nproc_per_node != "auto":
        return cfg.nproc_per_node
    if cfg.scheduler == "slurm":
        return max(1, cfg.slurm.gpus_per_node or 0)
    from tvts.train.launch import processes_per_node

    return processes_per_node(cfg)


class StageJob:
    """What each task of the job runs: the stage's `run`. A training stage's tasks form a
    process group (submitit exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); a
    single-task stage (evaluate) runs once with the node's GPUs and launches its fine-tuning
    processes there itself (launch.scheduler local inside the job). Requeued as is on
    preemption or timeout (submitit calls `checkpoint`)."""

    def __init__(self, stage: str, params_file: str, kwargs: dict[str, Any],
                 distributed: bool = True):
        self.stage, self.params_file, self.kwargs = stage, params_file, kwargs
        self.distributed = distributed

    def __call__(self) -> Any:
        import submitit

        params = load_params(self.params_file)
        if self.distributed:
            submitit.helpers.TorchDistributedEnvironment().export(overwrite=True)
        else:
            params = params.model_copy(update={"launch": params.launch.model_copy(
                update={"scheduler": "local", "nnodes": 1})})
        module = importlib.import_module(f"tvts.stages.{self.stage}")
        return module.run(params, **self.kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        # the stage's own checkpoints carry the state: the same call resumes from them
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def single_task(stage: str) -> bool:
    from tvts.train.launch import SINGLE_TASK_STAGES

    return stage in SINGLE_TASK_STAGES


def executor(cfg: LaunchConfig, stage: str, folder: Path) -> Any:
    """submitit's executor for the stage's job: nnodes x tasks_per_node tasks with one GPU
    each, or (a single-task stage) one task on one node with the GPUs of tasks_per_node."""
    import submitit

    n, s = tasks_per_node(cfg), cfg.slurm
    gpus = s.gpus_per_node if s.gpus_per_node is not None else n  # one per process
    nodes = 1 if single_task(stage) else cfg.nnodes
    if single_task(stage):
        n = 1
    if cfg.scheduler == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                   slurm_max_num_timeout=s.max_requeues)
        ex.update_parameters(
            name=f"tvts-{stage}", nodes=nodes, tasks_per_node=n, gpus_per_node=gpus,
            cpus_per_task=s.cpus_per_task,
            timeout_min=s.time_min, **({"mem_gb": s.mem_gb} if s.mem_gb else {}),
            **{f"slurm_{k}": v for k, v in (("partition", s.partition),
                                            ("account", s.account), ("qos", s.qos)) if v},
            **({"slurm_additional_parameters": dict(s.additional)} if s.additional else {}))
        return ex
    if nodes > 1:
        raise UserError("launch.scheduler submitit-local runs on this machine: set "
                        "launch.nnodes to 1, or use slurm")
    ex = submitit.AutoExecutor(folder=folder, cluster="local",
                               local_max_num_timeout=s.max_requeues)
    ex.update_parameters(name=f"tvts-{stage}", tasks_per_node=n, timeout_min=s.time_min)
    return ex


def _error_line(text: str) -> str:
    """The last `SomethingError: message` line of a job's error report."""
    found = re.findall(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Input)): (.+)$", text, re.M)
    return f"{found[-1][0]}: {found[-1][1]}" if found else text.strip().splitlines()[-1]


def submit(stage: str, params_file: str, cfg: LaunchConfig,
           kwargs: dict[str, Any] | None = None, echo: Callable[[str], Any] | None = None,
           poll_s: float = 5.0, on_submit: Callable[[Any], Any] | None = None) -> Any:
    """Submit the stage as a job, stream task 0's log to `echo` (stderr), wait; rank 0's
    return value, or a UserError with the job's error and where its logs are."""
    import submitit

    n = tasks_per_node(cfg)
    load_params(params_file, world_size=n * cfg.nnodes)  # the batch rules, before submitting
    folder = Path(cfg.slurm.log_dir) / stage
    job = executor(cfg, stage, folder).submit(
        StageJob(stage, params_file, kwargs or {}, distributed=not single_task(stage)))
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    layout = "1 task" if single_task(stage) else f"{cfg.nnodes} node(s) x {n} task(s)"
    echo(f"{stage}: submitted job {job.job_id} ({layout}, {cfg.scheduler}); logs in {folder}")
    if on_submit is not None:
        on_submit(job)
    shown = 0
    while True:
        done = job.done()
        text = job.stdout() or ""  # task 0's log, appended to across requeues
        for line in text[shown:].splitlines():
            echo(line)
        shown = len(text)
        if done:
            break
        time.sleep(poll_s)
    try:
        return job.results()[0]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
        raise UserError(f"{stage}: job {job.job_id} failed: {_error_line(str(e))} (its logs: "
                        f"{folder})") from None
