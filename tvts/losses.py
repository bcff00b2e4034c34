"""Contrastive (InfoNCE over the batch gathered from all ranks) and transcript-sort losses."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from tvts.models.sorter import permutations


def gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows concatenated in rank order; gradient flows to this rank's slice only.

    The loss on the gathered batch then has, with respect to the local rows, exactly the
    single-process gradient of the same loss on the concatenated batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def info_nce(video: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Bidirectional InfoNCE on L2-normalised embeddings, video->text + text->video (summed,
    as in the reference release), over the batch gathered from every rank."""
    v = gather_with_local_grad(F.normalize(video, dim=-1))
    t = gather_with_local_grad(F.normalize(text, dim=-1))
    logits = v @ t.T / temperature
    target = torch.arange(len(v), device=v.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def sort_loss(logits: torch.Tensor, order: torch.Tensor, modeling: str) -> torch.Tensor:
    """`order` (B, K): the true position of each (shuffled) transcript."""
    k = order.shape[1]
    if modeling == "kway":
        return F.cross_entropy(logits.reshape(-1, k), order.reshape(-1))
    if modeling == "pairwise":
        before = (order[:, :, None] < order[:, None, :]).float()
        off_diag = ~torch.eye(k, dtype=torch.bool, device=order.device)
        return F.binary_cross_entropy_with_logits(logits[:, off_diag], before[:, off_diag])
    if modeling == "factorial":
        return F.cross_entropy(logits, permutation_index(order))
    raise ValueError(f"unknown sort modeling {modeling!r}")


def permutation_index(order: torch.Tensor) -> torch.Tensor:
    """Row of `permutations(K)` equal to each order: (B, K) -> (B,)."""
    perms = permutations(order.shape[1]).to(order.device)
    return (order[:, None, :] == perms[None]).all(-1).float().argmax(-1)


def predicted_order(logits: torch.Tensor, modeling: str, k: int) -> torch.Tensor:
    """The position the sorter gives each transcript: (B, K)."""
    if modeling == "kway":
        return logits.argmax(-1)
    if modeling == "pairwise":
        # a transcript's position is the number of others predicted to come before it
        before = logits > 0
        return before.transpose(1, 2).sum(-1) - before.diagonal(dim1=1, dim2=2).long()
    return permutations(k).to(logits.device)[logits.argmax(-1)]


def sort_accuracy(logits: torch.Tensor, order: torch.Tensor, modeling: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-transcript accuracy, whole-sequence exact match), both averaged over the batch."""
    hit = predicted_order(logits, modeling, order.shape[1]) == order
    return hit.float().mean(), hit.all(-1).float().mean()
