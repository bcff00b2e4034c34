"""The ordering baselines of the paper's table 1, on the TVTS encoder: each clip is cut into K
segments of whole tubelets, shuffled, and each segment encoded on its own (its [CLS] vector);
a head then puts them back in order.

- `ClipOrderHead` (VCOP-style, Xu et al. 2019): from the video alone. Each pair of segment
  vectors goes through a shared layer; the pairs' codes, concatenated, are classified into the
  K! orders (`tvts.losses.permutations`).
- `FrameReorderer` (MERLOT-like, as the paper tailors MERLOT): a transformer over the K
  transcripts in their true order (each with a fixed code of its position) and the shuffled
  segment vectors; each segment is classified into one of the K positions, the logit of
  position j being its match with the transcript at j (a K-way head over the ordered
  transcripts: a fixed linear head over positions sat on a plateau for hundreds of steps in
  tests/test_ordering_objectives.py, where this one learns the planted order in 60).

Segments are encoded apart so a model cannot read the order off the seams between them (what
VCOP encodes clips apart for); each keeps its slices' share of the clip's masking.
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from tvts.models.position import sincos_table


def shuffled_segments(video: torch.Tensor, keep: torch.Tensor | None, order: torch.Tensor,
                      tubelet: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The clip's K segments in the shuffled order `order` (B, K): item i is the segment whose
    true position is order[:, i] (the convention of the transcripts' `order`).

    video (B, C, T, H, W), keep (B, slices, n_keep) -> (B*K, C, T/K, H, W), (B*K, slices/K, n).
    """
    b, c, t, h, w = video.shape
    k = order.shape[1]
    slices = t // tubelet
    if t % tubelet or slices % k:
        raise ValueError(f"a clip of {t} frames (tubelet {tubelet}) does not cut into {k} "
                         "segments of whole tubelets")
    segs = video.reshape(b, c, k, t // k, h, w).transpose(1, 2)  # (B, K, C, T/K, H, W)
    index = order.to(video.device)
    picked = torch.gather(segs, 1, index.view(b, k, 1, 1, 1, 1).expand_as(segs))
    out = picked.reshape(b * k, c, t // k, h, w)
    if keep is None:
        return out, None
    kept = keep.reshape(b, k, slices // k, keep.shape[-1])
    kept = torch.gather(kept, 1, index.view(b, k, 1, 1).expand_as(kept))
    return out, kept.reshape(b * k, slices // k, keep.shape[-1])


class ClipOrderHead(nn.Module):
    """VCOP's order prediction: pairwise codes of the K segment vectors -> K! logits."""

    def __init__(self, width: int, k: int, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.k = k
        self.register_buffer("pairs", torch.tensor(list(itertools.combinations(range(k), 2)),
                                                   dtype=torch.long), persistent=False)
        self.pair = nn.Sequential(nn.Linear(2 * width, hidden), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * len(self.pairs), math.factorial(k))

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        """segments (B, K, W), in the shuffled order -> (B, K!) over `permutations(K)`."""
        a, b = segments[:, self.pairs[:, 0]], segments[:, self.pairs[:, 1]]
        codes = self.pair(torch.cat([a, b], dim=-1))  # (B, pairs, hidden)
        return self.head(self.drop(codes.flatten(1)))


class FrameReorderer(nn.Module):
    """MERLOT-like: [ordered transcripts + position code ; shuffled segment vectors] -> for
    each segment, logits over the K positions (B, K, K), the K-way layout of the sorter."""

    def __init__(self, width: int, heads: int, blocks: int, k: int, text_dim: int):
        super().__init__()
        self.k = k
        self.text_in = nn.Identity() if text_dim == width else nn.Linear(text_dim, width)
        self.register_buffer("position", sincos_table(k, width), persistent=False)
        self.type_embed = nn.Parameter(torch.zeros(2, width))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=4.0, qkv_bias=True,
                                            norm_layer=norm) for _ in range(blocks)])
        self.norm = norm(width)
        self.query, self.key = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, ordered_text: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """ordered_text (B, K, Dt) in true order, segments (B, K, W) shuffled -> (B, K, K):
        logit [b, i, j] that segment i belongs at position j."""
        t = self.text_in(ordered_text) + self.position[None] + self.type_embed[0]
        s = segments + self.type_embed[1]
        x = self.norm(self.blocks(torch.cat([t, s], dim=1)))
        k = segments.shape[1]
        q, key = self.query(x[:, -k:]), self.key(x[:, :k])
        return q @ key.transpose(1, 2) / q.shape[-1] ** 0.5


def in_true_order(items: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Undo a shuffle: items (B, K, ...) where item i belongs at position order[:, i]."""
    out = torch.empty_like(items)
    index = order.to(items.device).view(*order.shape, *([1] * (items.dim() - 2)))
    return out.scatter_(1, index.expand_as(items), items)
