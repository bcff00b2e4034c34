"""Training stages start their own processes from params (`launch`): torch's elastic launcher
(`torch.distributed.run`'s machinery, as a library) runs the stage's `run` in every process,
so `dvc repro pretrain` on an 8-GPU node trains on all 8 and the outputs, `dvc.lock` and
experiments are the same as for one process.

The parent process only launches: each worker loads params itself (the batch rules checked for
the launch's world size) and joins the process group torchrun's environment describes
(`tvts.train.distributed.setup`). A worker's error comes back as the stage's error, with the
worker's own message.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable
from typing import Any

from tvts.config import LaunchConfig, load_params
from tvts.errors import UserError

TRAINING_STAGES = ("pretrain", "post_pretrain")  # every process runs the stage (DDP)
# runs once, as a scheduler's job of one task on a node; its fine-tuning launches the node's
# processes itself (launches_workers)
SINGLE_TASK_STAGES = ("evaluate",)


def processes_per_node(cfg: LaunchConfig) -> int:
    if cfg.nproc_per_node == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    return cfg.nproc_per_node


def inside_launch() -> bool:
    """Whether this process is a worker of a launch (the stages' own, or torchrun by hand)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def should_launch(stage: str, cfg: LaunchConfig) -> bool:
    """Whether the CLI hands the stage to the launcher: a training stage asked to run as a
    scheduler's job or in more than one process, or evaluate as a scheduler's job; never
    inside a launch already."""
    if inside_launch():
        return False
    if stage in SINGLE_TASK_STAGES:
        return cfg.scheduler != "local"
    if stage not in TRAINING_STAGES:
        return False
    return cfg.scheduler != "local" or processes_per_node(cfg) * cfg.nnodes > 1


def launches_workers(cfg: LaunchConfig) -> bool:
    """Whether work inside a stage (evaluate's fine-tuning) runs in launched processes: the
    local scheduler asks for several on this node and this process is not one of them."""
    return (cfg.scheduler == "local" and not inside_launch() and cfg.nnodes == 1
            and processes_per_node(cfg) > 1)


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    from torch.distributed.elastic.multiprocessing.errors import record

    from tvts.train.distributed import cleanup, setup

    @record
    def run() -> Any:
        d = setup()
        try:
            return fn(**kwargs, d=d)
        finally:
            cleanup()

    return run()


def launch_function(fn: Callable[..., Any], kwargs: dict[str, Any], cfg: LaunchConfig,
                    what: str) -> Any:
    """`fn(**kwargs, d=Dist)` in launch's processes on this node (torch's elastic launcher, a
    process group of nproc_per_node); rank 0's return value. `fn` and `kwargs` go to the
    processes by pickling (a module-level function, picklable arguments)."""
    return _elastic(cfg, processes_per_node(cfg), 1, "localhost:0",
                    f"tvts-{what}-{uuid.uuid4().hex[:8]}", _call, (fn, kwargs), what)


def _elastic(cfg: LaunchConfig, n: int, nnodes: int, endpoint: str, run_id: str,
             entrypoint: Callable[..., Any], args: tuple[Any, ...], what: str) -> Any:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig as ElasticConfig
    from torch.distributed.launcher.api import elastic_launch

    config = ElasticConfig(min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=n,
                           run_id=run_id, rdzv_backend="c10d", rdzv_endpoint=endpoint,
                           rdzv_configs={"is_host": True} if nnodes == 1 else {},
                           max_restarts=cfg.max_restarts, start_method="spawn",
                           monitor_interval=0.5)
    try:
        results = elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as e:
        raise UserError(f"{what}: a training process failed ({_failure_message(e)})"
                        ) from None
    return results[min(results)] if results else None


def _worker(stage_module: str, params_file: str, kwargs: dict[str, Any]) -> Any:
    from torch.distributed.elastic.multiprocessing.errors import record

    @record  # the worker's exception, message and traceback, reach the launcher's report
    def run() -> Any:
        module = importlib.import_module(stage_module)
        return module.run(load_params(params_file), **kwargs)

    return run()


def _failure_message(error: Exception) -> str:
    failures = getattr(error, "failures", {}) or {}
    if not failures:
        return str(error)
    rank, failure = min(failures.items())
    message = failure.message
    if isinstance(message, dict):  # the error file's record
        message = message.get("message", message)
    text = str(message).strip() or f"exit code {failure.exitcode}"
    return f"rank {rank}: {text.splitlines()[0]}"


def launch(stage: str, params_file: str, cfg: LaunchConfig,
           kwargs: dict[str, Any] | None = None) -> Any:
    """Run `tvts.stages.<stage>.run(params, **kwargs)` in `launch`'s processes on this node
    (or as a job of its scheduler: tvts.train.submit); the lowest local rank's return value
    (rank 0's summary on node 0)."""
    if cfg.scheduler != "local":
        from tvts.train.submit import submit

        return submit(stage, params_file, cfg, kwargs)
    n = processes_per_node(cfg)
    load_params(params_file, world_size=n * cfg.nnodes)  # the batch rules, before any start
    # one node: a c10d store on a free local port (torchrun --standalone); several: node 0's
    endpoint = cfg.rdzv_endpoint or "localhost:0"
    run_id = f"tvts-{stage}" if cfg.nnodes > 1 else f"tvts-{stage}-{uuid.uuid4().hex[:8]}"
    return _elastic(cfg, n, cfg.nnodes, endpoint, run_id, _worker,
                    (f"tvts.stages.{stage}", params_file, kwargs or {}), stage)
