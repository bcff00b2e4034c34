"""Retrieval metrics (Frozen-in-Time style): rank of the ground truth, R@k in percent, MedR."""

from __future__ import annotations

import torch


def ranks(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the diagonal (the ground truth) in each row of a query x item matrix."""
    truth = similarity.diagonal().unsqueeze(1)
    return (similarity > truth).sum(dim=1) + 1


def retrieval_metrics(similarity: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
                      ) -> dict[str, float]:
    r = ranks(similarity).float()
    out = {f"R@{k}": float((r <= k).float().mean() * 100) for k in ks}
    out["MedR"] = float(r.median())
    return out
