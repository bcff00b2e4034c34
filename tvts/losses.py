"""Contrastive (InfoNCE over the batch gathered from all ranks) and transcript-sort losses."""

from __future__ import annotations

import hashlib
import itertools

import torch
import torch.distributed as dist
import torch.nn.functional as F


def permutations(k: int) -> torch.Tensor:
    """All K! orders, lexicographic: row i is the position of each transcript under class i."""
    return torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)


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


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows concatenated in rank order (labels, ids: nothing to differentiate)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def info_nce(video: torch.Tensor, text: torch.Tensor, temperature: float,
             groups: torch.Tensor | None = None, gather: bool = True) -> torch.Tensor:
    """Bidirectional InfoNCE on L2-normalised embeddings, video->text + text->video (summed,
    as in the reference release), over the batch gathered from every rank.

    The similarities and the softmax are computed in fp32 whatever the autocast dtype: at
    temperature 0.05 a bf16 logit is off by up to ~0.1. `groups` (B,): rows of one video
    (several samples of one decoded span carry the same transcripts) are not each other's
    negatives; their pairs leave the denominators, so the loss has no floor of log(copies).
    `gather=False`: this process's rows only (validation runs on one rank: a collective
    there would wait forever for the others).
    """
    with torch.autocast(video.device.type, enabled=False):
        v, t = F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)
        if gather:
            v, t = gather_with_local_grad(v), gather_with_local_grad(t)
        logits = v @ t.T / temperature
        target = torch.arange(len(v), device=v.device)
        if groups is not None:
            g = gather_no_grad(groups.to(v.device)) if gather else groups.to(v.device)
            same = (g[:, None] == g[None, :]) & ~torch.eye(len(g), dtype=torch.bool,
                                                            device=v.device)
            logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def group_ids(names: list[str]) -> torch.Tensor:
    """A 63-bit id per name, equal across processes (Python's hash() is salted per process)."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(n.encode(), digest_size=8).digest(),
                                        "big") >> 1 for n in names], dtype=torch.long)


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
