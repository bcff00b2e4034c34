"""Learning-rate schedules as a function of progress in epochs (so resume needs no state)."""

from __future__ import annotations

import math


def lr_at(epoch_progress: float, base_lr: float, schedule: str, epochs: int,
          milestones: list[int], warmup_epochs: float = 0.0) -> float:
    """`epoch_progress`: epochs done, fractional (2.5 = halfway through the third epoch)."""
    if warmup_epochs > 0 and epoch_progress < warmup_epochs:
        return base_lr * (epoch_progress + 1e-8) / warmup_epochs
    if schedule == "step":  # the release's decay: x0.1 at each milestone epoch
        return base_lr * 0.1 ** sum(epoch_progress >= m for m in milestones)
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-8)
        t = min(max((epoch_progress - warmup_epochs) / span, 0.0), 1.0)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}")
