"""Ranking and classification metrics, as the reference implementations behind the paper's
tables define them (Frozen-in-Time's `retrieval_metrics`, reused by the authors' release and
CLIP4Clip): R@k in percent, MedR and MeanR over 1-based ranks.

One mechanism, `hit_rates`, serves every ranking figure: text-to-video retrieval (one ground
truth per query), video-to-video retrieval (any clip of the query's label), and training
validation (any clip of the query's video).

- Ranks are 1-based: the ground truth ranked first has rank 1.
- Ties are averaged over the tied block (the rule later retrieval codes offer as the mean
  rank): a query whose ground truth shares its score with e items (itself included) at
  positions a+1 .. a+e counts the expected figures of a uniformly random order of that block.
  Its rank is a + (e+1)/2 and its hit at k is the probability that the ground truth lands in
  the first k. An encoder that maps every clip to one vector therefore scores R@1 = 100/N and
  MedR ~ N/2, not R@1 = 100 and MedR = 1 as the optimistic rule of the reference code gave.
  On real float features exact ties are rare and both rules give the same figures.
- With several ground truths (any clip of a label, any clip of a video) the figures are those
  of the first ground truth found: with s of them in the tied block, its expected position in
  the block is (e+1)/(s+1), and the hit at k is 1 - C(e-s, m)/C(e, m) for the m = k - a
  places the block has in the top k.
- MedR is NumPy's median: for an even number of queries, the mean of the two middle ranks
  (torch.median would return the lower one and flatter the figure).
- Multi-caption sets: every caption is a query (row) whose ground truth is its video's column;
  paragraph sets (DiDeMo) have one query per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10, 50)


@dataclass(frozen=True)
class TiedRanks:
    """Per query: `ahead` items scoring strictly above its best ground truth, and the block of
    `tied` items sharing that score, `positives` of them ground truths (see the docstring)."""

    ahead: torch.Tensor  # (Q,) float64
    tied: torch.Tensor  # (Q,) float64, >= 1
    positives: torch.Tensor  # (Q,) float64, 1 <= positives <= tied

    def ranks(self) -> torch.Tensor:
        """Expected 1-based rank of the first ground truth."""
        return self.ahead + (self.tied + 1) / (self.positives + 1)

    def hit_rate(self, k: int) -> torch.Tensor:
        """(Q,) probability that a ground truth is among the first k."""
        m = (k - self.ahead).clamp(min=0)
        # C(e-s, m) / C(e, m) = prod_{i<m} (e-s-i) / (e-i): no ground truth in the m places
        miss = torch.ones_like(self.tied)
        for i in range(int(min(k, float(self.tied.max())))):
            step = ((self.tied - self.positives - i) / (self.tied - i)).clamp(min=0)
            miss = torch.where(i < m, miss * step, miss)
        return torch.where(m > 0, 1 - miss, torch.zeros_like(miss))


def tied_ranks(similarity: torch.Tensor, positive: torch.Tensor) -> TiedRanks:
    """Query x item `similarity` and a boolean `positive` mask of the same shape (each row
    needs at least one). Items scored -inf are never retrieved (e.g. the query itself)."""
    if not bool(positive.any(dim=1).all()):
        raise ValueError("every query needs a ground truth among the items")
    sim = similarity.double()
    best = sim.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    tied = sim == best
    return TiedRanks((sim > best).sum(1).double(), tied.sum(1).double(),
                     (tied & positive).sum(1).double())


def _targets_mask(similarity: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    if targets is None:
        if similarity.shape[0] != similarity.shape[1]:
            raise ValueError(f"a {tuple(similarity.shape)} matrix has no diagonal ground truth: "
                             "pass targets")
        targets = torch.arange(similarity.shape[0], device=similarity.device)
    mask = torch.zeros(similarity.shape, dtype=torch.bool, device=similarity.device)
    mask[torch.arange(len(targets), device=similarity.device), targets.long()] = True
    return mask


def ranks(similarity: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Expected 1-based rank of each query's ground-truth column in a query x item matrix
    (ties averaged). `targets` (Q,) names each query's ground-truth column; without it, the
    diagonal (query i matches item i)."""
    return tied_ranks(similarity, _targets_mask(similarity, targets)).ranks()


def median_rank(r: torch.Tensor | np.ndarray) -> float:
    """NumPy's median: the mean of the two middle values for an even count."""
    arr = r.detach().cpu().numpy() if torch.is_tensor(r) else np.asarray(r)
    return float(np.median(arr.astype(np.float64)))


def hit_rates(similarity: torch.Tensor, positive: torch.Tensor,
              ks: tuple[int, ...] = DEFAULT_KS, with_ranks: bool = True) -> dict[str, float]:
    """R@k (percent of queries with a ground truth in the first k) and, `with_ranks`, MedR and
    MeanR of the first ground truth, ties averaged (see the module docstring)."""
    if similarity.shape[0] == 0:
        raise ValueError("no queries to score")
    t = tied_ranks(similarity, positive)
    out = {f"R@{k}": float(t.hit_rate(k).mean() * 100) for k in ks}
    if with_ranks:
        r = t.ranks()
        out["MedR"] = median_rank(r)
        out["MeanR"] = float(r.mean())
    return out


def retrieval_metrics(similarity: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS,
                      targets: torch.Tensor | None = None) -> dict[str, float]:
    """R@k, MedR, MeanR for a query x item similarity matrix with one ground-truth column per
    query (`targets`, or the diagonal)."""
    return hit_rates(similarity.float(), _targets_mask(similarity, targets), ks)


def label_retrieval(similarity: torch.Tensor, query_labels: torch.Tensor,
                    item_labels: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10),
                    exclude: torch.Tensor | None = None) -> dict[str, float]:
    """Video-to-video retrieval: a query hits at k when any of its k most similar items shares
    its label. `exclude` (Q,) is the column of the query itself in the gallery (-1: none),
    never retrieved. A query whose label no other item has counts as a miss at every k."""
    sim = similarity.float().clone()
    positive = item_labels[None, :] == query_labels[:, None]
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        sim[rows, exclude[rows]] = float("-inf")
        positive[rows, exclude[rows]] = False
    answerable = positive.any(dim=1)
    if not bool(answerable.any()):
        return {f"R@{k}": 0.0 for k in ks}
    share = float(answerable.double().mean())
    return {k: v * share for k, v in
            hit_rates(sim[answerable], positive[answerable], ks, with_ranks=False).items()}


def degeneracy(features: np.ndarray | torch.Tensor, name: str) -> str | None:
    """A warning when a feature matrix (N, D) cannot rank anything: near-constant (the spread
    across items below 1e-6 of their size) or of numerical rank below a tenth of what N and D
    allow (a collapsed encoder). None when the features look usable."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float64)).reshape(len(features), -1)
    if len(x) < 3:
        return None
    centred = x - x.mean(0)
    spread = float(centred.pow(2).sum(1).mean())
    size = float(x.pow(2).sum(1).mean())
    if spread <= 1e-6 * max(size, 1e-30):
        return f"{name}: features are near-constant across {len(x)} clips (a collapsed encoder?)"
    sv = torch.linalg.svdvals(centred)
    rank = int((sv > 1e-3 * sv[0]).sum())
    room = min(len(x) - 1, x.shape[1])
    if rank < max(2, room // 10):
        return (f"{name}: features have numerical rank {rank} of a possible {room} "
                "(rank-deficient: a collapsed encoder?)")
    return None


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
                  ) -> dict[str, float]:
    """Top-k accuracy in percent; k larger than the number of classes counts every class."""
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    hit = top == labels[:, None]
    return {f"top{k}": float(hit[:, :min(k, k_max)].any(dim=1).float().mean() * 100)
            for k in ks}
