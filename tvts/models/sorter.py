"""Sort transformer: [video tokens ; K transcript features] -> the order of the transcripts.

A learnable type embedding (video / text, zeros at start) and no position embedding on the
transcripts, so the `kway` and `pairwise` heads are equivariant to the transcripts' order.
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

MODELINGS = ("kway", "pairwise", "factorial")


def permutations(k: int) -> torch.Tensor:
    """All K! orders, lexicographic: row i is the position of each transcript under class i."""
    return torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)


class SortTransformer(nn.Module):
    def __init__(self, width: int, heads: int, blocks: int, k: int, modeling: str = "kway",
                 text_dim: int | None = None):
        super().__init__()
        if modeling not in MODELINGS:
            raise ValueError(f"sort.modeling = {modeling!r}; allowed: {', '.join(MODELINGS)}")
        self.k, self.modeling = k, modeling
        self.text_in = (nn.Identity() if text_dim in (None, width)
                        else nn.Linear(text_dim, width))
        self.type_embed = nn.Parameter(torch.zeros(2, width))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=4.0, qkv_bias=True,
                                            norm_layer=norm) for _ in range(blocks)])
        self.norm = norm(width)
        if modeling == "kway":
            self.head = nn.Linear(width, k)
        elif modeling == "pairwise":
            self.head = nn.Linear(2 * width, 1)
        else:
            self.register_buffer("perms", permutations(k), persistent=False)
            self.head = nn.Linear(k * width, math.factorial(k))

    def forward(self, video_tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """video_tokens (B, N, W), text (B, K, Dt) -> logits.

        kway: (B, K, K), transcript i over positions; pairwise: (B, K, K), logit that i comes
        before j; factorial: (B, K!), over `permutations(K)`.
        """
        t = self.text_in(text) + self.type_embed[1]
        v = video_tokens + self.type_embed[0]
        x = self.blocks(torch.cat([v, t], dim=1))
        h = self.norm(x[:, -t.shape[1]:])
        if self.modeling == "kway":
            return self.head(h)
        if self.modeling == "pairwise":
            k = h.shape[1]
            pairs = torch.cat([h[:, :, None].expand(-1, -1, k, -1),
                               h[:, None, :].expand(-1, k, -1, -1)], dim=-1)
            return self.head(pairs).squeeze(-1)
        return self.head(h.flatten(1))
