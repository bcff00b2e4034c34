"""Probes on frozen features: the paper's linear probe and V-JEPA's attentive probe.

Both train on one view per training clip and test by averaging the class probabilities over
each test clip's views (multi-view test). Training is seeded and runs on cached features, so a
probe costs seconds where the features cost a pass over the videos.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tvts.metrics import topk_accuracy


@dataclass(frozen=True)
class ProbeSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.9
    heads: int = 4
    seed: int = 0


@dataclass
class ProbeResult:
    metrics: dict[str, float]  # top1, top5 in percent
    predicted: np.ndarray  # (M,) class index per test clip
    probabilities: np.ndarray  # (M, C), averaged over views


class LinearProbe(nn.Module):
    """Truly linear: a fixed standardisation (the training features' mean and std, as MAE's
    BatchNorm without affine at the end of training) and one linear layer."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, classes: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.fc = nn.Linear(mean.shape[-1], classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x - self.mean) / self.std)


class AttentiveProbe(nn.Module):
    """V-JEPA's frozen evaluation: one cross-attention block whose learned query pools the
    frozen patch tokens (q + attention(q, norm(tokens)), then q + MLP(norm(q)), both with
    residuals, MLP x4 with GELU), then a linear classifier on the pooled query."""

    def __init__(self, width: int, classes: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        heads = math.gcd(width, heads) or 1
        self.query = nn.Parameter(torch.zeros(1, 1, width))
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.fc = nn.Linear(width, classes)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm1(tokens.float())
        q = self.query.expand(len(x), -1, -1)
        q = q + self.attn(q, x, x, need_weights=False)[0]
        q = q + self.mlp(self.norm2(q))
        return self.fc(q[:, 0])


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
           s: ProbeSettings, progress: Callable[[int], None] | None) -> None:
    gen = torch.Generator().manual_seed(s.seed)
    steps_per_epoch = max(1, math.ceil(len(x) / s.batch_size))
    total = s.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    model.train()
    for _ in range(s.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * s.batch_size:(i + 1) * s.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            progress(1)
    model.eval()


@torch.no_grad()
def _test(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> ProbeResult:
    """x: (M, V, ...) -> class probabilities averaged over the V views."""
    m, v = x.shape[:2]
    probs = torch.cat([F.softmax(model(x[i:i + batch].flatten(0, 1)), dim=-1)
                       .reshape(-1, v, model.fc.out_features).mean(1)
                       for i in range(0, m, batch)])
    return ProbeResult(topk_accuracy(probs, y), probs.argmax(1).numpy(), probs.numpy())


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, classes: int, s: ProbeSettings,
                 progress: Callable[[int], None] | None = None) -> ProbeResult:
    """train_x (N, D), test_x (M, V, D): SGD with momentum, cosine schedule."""
    torch.manual_seed(s.seed)
    x = torch.as_tensor(train_x, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
    model = LinearProbe(mean, std, classes)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum,
                          weight_decay=s.weight_decay)
    _train(model, x, torch.as_tensor(train_y, dtype=torch.long), opt, s, progress)
    return _test(model, torch.as_tensor(test_x, dtype=torch.float32),
                 torch.as_tensor(test_y, dtype=torch.long))


def attentive_probe(train_tokens: np.ndarray, train_y: np.ndarray, test_tokens: np.ndarray,
                    test_y: np.ndarray, classes: int, s: ProbeSettings,
                    progress: Callable[[int], None] | None = None) -> ProbeResult:
    """train_tokens (N, T, W), test_tokens (M, V, T, W): AdamW, cosine schedule."""
    torch.manual_seed(s.seed)
    model = AttentiveProbe(train_tokens.shape[-1], classes, s.heads)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    _train(model, torch.as_tensor(train_tokens), torch.as_tensor(train_y, dtype=torch.long),
           opt, s, progress)
    return _test(model, torch.as_tensor(test_tokens), torch.as_tensor(test_y, dtype=torch.long))
