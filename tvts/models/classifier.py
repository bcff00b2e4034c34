"""A video ViT with a classification head, as VideoMAE fine-tunes it: the mean of the patch
tokens, a LayerNorm, dropout and a linear head initialised small (x `head_init_scale`)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from tvts.models.video_vit import VideoViT


def with_drop_path(video: VideoViT, rate: float) -> VideoViT:
    """The same encoder and weights with stochastic depth `rate` (linearly rising over the
    blocks to `rate` in the last one). Drop path is built into the blocks, so a rate set
    after the build would be ignored: the release's defect."""
    out = VideoViT(replace(video.cfg, drop_path=rate), video.grad_checkpointing,
                   video.drop_before_embed)
    out.load_state_dict(video.state_dict())
    return out


class VideoClassifier(nn.Module):
    def __init__(self, video: VideoViT, classes: int, dropout: float = 0.0,
                 head_init_scale: float = 1e-3):
        super().__init__()
        width = video.cfg.width
        self.video = video
        self.fc_norm = nn.LayerNorm(width, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)

    @property
    def depth(self) -> int:
        return self.video.cfg.depth

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised clips (B, C, T, H, W) -> logits (B, classes)."""
        _, tokens = self.video(video)
        return self.head(self.dropout(self.fc_norm(tokens[:, 1:].mean(1))))
