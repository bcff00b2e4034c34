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
from typing import Any

from tvts.config import LaunchConfig, load_params
from tvts.errors import UserError

TRAINING_STAGES = ("pretrain", "post_pretrain")


def processes_per_node(cfg: LaunchConfig) -> int:
    if cfg.nproc_per_node == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    return cfg.nproc_per_node


def inside_launch() -> bool:
    """Whether this process is a worker of a launch (the stages' own, or torchrun by hand)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def should_launch(stage: str, cfg: LaunchConfig) -> bool:
    """A training stage, not already inside a launch, asked to run as a scheduler's job or in
    more than one process."""
    if stage not in TRAINING_STAGES or inside_launch():
        return False
    return cfg.scheduler != "local" or processes_per_node(cfg) * cfg.nnodes > 1


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
    return f"rank {rank}: {text.splitlines()[0] if text else text}"


def launch(stage: str, params_file: str, cfg: LaunchConfig,
           kwargs: dict[str, Any] | None = None) -> Any:
    """Run `tvts.stages.<stage>.run(params, **kwargs)` in `launch`'s processes on this node
    (or as a job of its scheduler: tvts.train.submit); the lowest local rank's return value
    (rank 0's summary on node 0)."""
    if cfg.scheduler != "local":
        from tvts.train.submit import submit

        return submit(stage, params_file, cfg, kwargs)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig as ElasticConfig
    from torch.distributed.launcher.api import elastic_launch

    n = processes_per_node(cfg)
    load_params(params_file, world_size=n * cfg.nnodes)  # the batch rules, before any start
    # one node: a c10d store on a free local port (torchrun --standalone); several: node 0's
    endpoint = cfg.rdzv_endpoint or "localhost:0"
    run_id = f"tvts-{stage}" if cfg.nnodes > 1 else f"tvts-{stage}-{uuid.uuid4().hex[:8]}"
    config = ElasticConfig(min_nodes=cfg.nnodes, max_nodes=cfg.nnodes, nproc_per_node=n,
                           run_id=run_id, rdzv_backend="c10d", rdzv_endpoint=endpoint,
                           rdzv_configs={"is_host": cfg.nnodes == 1} if cfg.nnodes == 1
                           else {}, max_restarts=cfg.max_restarts, start_method="spawn",
                           monitor_interval=0.5)
    try:
        results = elastic_launch(config, _worker)(f"tvts.stages.{stage}", params_file,
                                                  kwargs or {})
    except ChildFailedError as e:
        raise UserError(f"{stage}: a training process failed ({_failure_message(e)})"
                        ) from None
    return results[min(results)] if results else None
