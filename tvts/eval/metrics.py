"""Ranking and classification metrics, as the reference implementations behind the paper's
tables define them (Frozen-in-Time's `retrieval_metrics`, reused by the authors' release and
CLIP4Clip): R@k in percent, MedR and MeanR over 1-based ranks.

One function, `retrieval_metrics`, serves training validation and the `evaluate` stage.

- Ranks are 1-based: the ground truth ranked first has rank 1.
- Ties are optimistic, as in the reference code: an item scoring exactly the ground truth's
  similarity does not rank ahead of it.
- MedR is NumPy's median: for an even number of queries, the mean of the two middle ranks
  (torch.median would return the lower one and flatter the figure).
- Multi-caption sets: every caption is a query (row) whose ground truth is its video's column;
  paragraph sets (DiDeMo) have one query per video.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10, 50)


def ranks(similarity: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each query's ground-truth column in a query x item matrix.

    `targets` (Q,) names each query's ground-truth column; without it, the diagonal (query i
    matches item i). Items scoring equal to the ground truth do not count ahead of it.
    """
    if targets is None:
        if similarity.shape[0] != similarity.shape[1]:
            raise ValueError(f"a {tuple(similarity.shape)} matrix has no diagonal ground truth: "
                             "pass targets")
        targets = torch.arange(similarity.shape[0], device=similarity.device)
    truth = similarity.gather(1, targets.long().view(-1, 1))
    return (similarity > truth).sum(dim=1) + 1


def median_rank(r: torch.Tensor | np.ndarray) -> float:
    """NumPy's median: the mean of the two middle values for an even count."""
    arr = r.detach().cpu().numpy() if torch.is_tensor(r) else np.asarray(r)
    return float(np.median(arr.astype(np.float64)))


def rank_metrics(r: torch.Tensor | np.ndarray, ks: tuple[int, ...] = DEFAULT_KS
                 ) -> dict[str, float]:
    """R@k (percent of queries ranked k or better), MedR and MeanR of 1-based ranks."""
    arr = (r.detach().cpu().numpy() if torch.is_tensor(r) else np.asarray(r)).astype(np.float64)
    if arr.size == 0:
        raise ValueError("no queries to score")
    out = {f"R@{k}": float((arr <= k).mean() * 100) for k in ks}
    out["MedR"] = float(np.median(arr))
    out["MeanR"] = float(arr.mean())
    return out


def retrieval_metrics(similarity: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS,
                      targets: torch.Tensor | None = None) -> dict[str, float]:
    """R@k, MedR, MeanR for a query x item similarity matrix (see the module docstring)."""
    return rank_metrics(ranks(similarity.float(), targets), ks)


def label_retrieval(similarity: torch.Tensor, query_labels: torch.Tensor,
                    item_labels: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10),
                    exclude: torch.Tensor | None = None) -> dict[str, float]:
    """Video-to-video retrieval: a query hits at k when any of its k most similar items shares
    its label. `exclude` (Q,) is the column of the query itself in the gallery (-1: none),
    never retrieved."""
    sim = similarity.float().clone()
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        sim[rows, exclude[rows]] = float("-inf")
    k_max = min(max(ks), sim.shape[1] - (1 if exclude is not None else 0))
    top = sim.topk(k_max, dim=1).indices
    same = item_labels[top] == query_labels[:, None]
    return {f"R@{k}": float(same[:, :k].any(dim=1).float().mean() * 100) for k in ks}


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
                  ) -> dict[str, float]:
    """Top-k accuracy in percent; k larger than the number of classes counts every class."""
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    hit = top == labels[:, None]
    return {f"top{k}": float(hit[:, :min(k, k_max)].any(dim=1).float().mean() * 100)
            for k in ks}
