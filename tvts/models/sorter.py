"""Sort transformer: [video tokens ; K transcript features] -> the order of the transcripts.

A learnable type embedding (video / text, zeros at start) and no position embedding on the
transcripts, so the `kway` and `pairwise` heads are equivariant to the transcripts' order.

`time_embedding = "sincos"` adds a fixed sinusoidal code of each video token's temporal slice
(not in the release). The release relies on the encoder's temporal table, initialised to
zeros, to carry time to its output; trained from scratch for minutes (the demo), that table
stays too small to be read, and the sorter learns the training videos' scripts instead.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from tvts.losses import permutations
from tvts.models.position import sincos_table

MODELINGS = ("kway", "pairwise", "factorial")
TIME_EMBEDDINGS = ("none", "sincos")


class SortTransformer(nn.Module):
    def __init__(self, width: int, heads: int, blocks: int, k: int, modeling: str = "kway",
                 text_dim: int | None = None, time_embedding: str = "none", slices: int = 1):
        super().__init__()
        if modeling not in MODELINGS:
            raise ValueError(f"sort.modeling = {modeling!r}; allowed: {', '.join(MODELINGS)}")
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"sort.time_embedding = {time_embedding!r}; allowed: "
                             f"{', '.join(TIME_EMBEDDINGS)}")
        self.k, self.modeling = k, modeling
        self.slices = slices
        self.register_buffer("time_code", sincos_table(slices, width)
                             if time_embedding == "sincos" else None, persistent=False)
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
        if self.time_code is not None:
            v = self._add_time(v)
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

    def _add_time(self, v: torch.Tensor) -> torch.Tensor:
        """[CLS] + slices x n tokens, laid out slice by slice (the encoder's order)."""
        b, n, w = v.shape
        if n == 0:  # no video tokens: the text-only control
            return v
        per, rest = divmod(n - 1, self.slices)
        if rest:
            raise ValueError(f"{n - 1} video tokens do not split into {self.slices} slices")
        patches = v[:, 1:].reshape(b, self.slices, per, w) + self.time_code[None, :, None]
        return torch.cat([v[:, :1], patches.reshape(b, -1, w)], dim=1)
