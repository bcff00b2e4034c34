"""The optimiser: AdamW, by default through PyTorch's fused kernel (one kernel for all
parameters' updates, on a GPU and on a CPU) rather than a kernel per tensor operation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

AdamWImpl = Literal["fused", "foreach", "for-loop"]


def adamw(params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float,
          weight_decay: float, device: torch.device, impl: AdamWImpl = "fused"
          ) -> torch.optim.AdamW:
    """AdamW with the given implementation (over parameters, or parameter groups whose own
    `weight_decay` wins); `fused` falls back to `foreach` on a device the
    fused kernel does not support. The implementations differ only in rounding."""
    fused = impl == "fused" and device.type in ("cuda", "cpu")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay,
                             fused=True if fused else None,
                             foreach=False if impl == "for-loop" else None)
