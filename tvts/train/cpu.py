"""What a CPU training process may use: its share of the cores, and whether it computes bf16
natively.

On a CPU, the loader workers decode on the same cores the model computes on. PyTorch's
intra-op threads wait for each other at the end of every parallel region, so a thread the
scheduler parks behind a decoding worker stalls the whole matrix product: on the 2-core demo
machine, 2 threads beside 2 loader workers made pretraining 1.5x slower than 1 thread
(bench/README.md, "Training throughput").
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def compute_threads(loader_workers: int, local_processes: int = 1,
                    cores: int | None = None) -> int:
    """Intra-op threads for one training process: its share of the cores, less its loader
    workers, at least 1."""
    share = (cores or usable_cores()) // max(1, local_processes)
    return max(1, share - loader_workers)


@contextlib.contextmanager
def thread_budget(loader_workers: int, local_processes: int = 1) -> Iterator[int]:
    """Lower torch's intra-op threads to `compute_threads` for the block (never raise them:
    a user's OMP_NUM_THREADS / torch.set_num_threads below the budget stays); restored on
    exit."""
    before = torch.get_num_threads()
    budget = min(before, compute_threads(loader_workers, local_processes))
    if budget != before:
        log.info("CPU training: %d compute thread(s) beside %d loader worker(s)", budget,
                 loader_workers)
        torch.set_num_threads(budget)
    try:
        yield budget
    finally:
        if budget != before:
            torch.set_num_threads(before)


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), where bf16
    autocast is faster than fp32; elsewhere it is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
