"""Per-item work over spawned worker processes, in order, with a progress callback."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def process_map(fn: Callable[[T], R], jobs: Sequence[T], workers: int,
                progress: Callable[[int], None] | None = None, chunksize: int = 1,
                min_jobs: int = 2) -> list[R]:
    """`[fn(j) for j in jobs]`, in `workers` spawned processes (fork-safety with PyAV, torch)
    when there are at least `min_jobs`; results in job order."""
    tick = progress or (lambda n: None)
    results: list[R] = []
    if workers <= 1 or len(jobs) < min_jobs:
        for job in jobs:
            results.append(fn(job))
            tick(1)
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for r in pool.map(fn, jobs, chunksize=chunksize):
            results.append(r)
            tick(1)
    return results
