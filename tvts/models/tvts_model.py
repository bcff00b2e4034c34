"""The TVTS model: video ViT + text encoder + projections + sort transformer, and its loss.

L = [contrastive.enabled] * InfoNCE(video [CLS], projected mean of the K transcripts)
    + sort.lambda * L_sort(sorter(video tokens, transcripts)),
with the transcripts entering the sorter through stop-gradient when sort.stop_gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tvts.losses import info_nce, sort_accuracy, sort_loss
from tvts.models.sorter import SortTransformer
from tvts.models.text_encoder import TextEncoder
from tvts.models.video_vit import VideoViT


class Projections(nn.Module):
    """To the common space: video Linear on [CLS]; text ReLU -> Linear (the release's "minimal")."""

    def __init__(self, video_dim: int, text_dim: int, embed_dim: int):
        super().__init__()
        self.video = nn.Linear(video_dim, embed_dim)
        self.text = nn.Sequential(nn.ReLU(), nn.Linear(text_dim, embed_dim))


@dataclass(frozen=True)
class ObjectiveConfig:
    temperature: float = 0.05
    contrastive: bool = True
    sort_lambda: float = 2.0
    stop_gradient: bool = True


class TVTSModel(nn.Module):
    def __init__(self, video: VideoViT, text: TextEncoder, sorter: SortTransformer,
                 embed_dim: int, objective: ObjectiveConfig):
        super().__init__()
        self.video, self.text, self.sorter = video, text, sorter
        self.proj = Projections(video.cfg.width, text.dim, embed_dim)
        self.objective = objective

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, K, L) -> (B, K, Dt)."""
        b, k, n = input_ids.shape
        feats = self.text(input_ids.reshape(b * k, n), attention_mask.reshape(b * k, n))
        return feats.reshape(b, k, -1)

    def forward(self, video: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, order: torch.Tensor | None = None,
                keep: torch.Tensor | None = None, groups: torch.Tensor | None = None,
                gather: bool = True) -> dict[str, torch.Tensor]:
        """Loss parts, sort accuracy, the (detached) common-space vectors and, when sorting,
        the sorter's (detached) inputs: `video_tokens` and `transcripts`.

        `order` (B, K) is each transcript's true position; without it only the contrastive
        loss is computed (post-pretraining on captioned images and clips). `groups` (B,):
        the video of each row; rows of one video are not each other's contrastive negatives.
        `gather=False`: the contrastive batch is this process's rows (validation on one rank).
        """
        obj = self.objective
        cls, tokens = self.video(video, keep)
        text = self.encode_text(input_ids, attention_mask)
        # the global text vector: the mean of the K [CLS] vectors, then projected (paper,
        # sec. 3.2: t^ = mean of t_i; projecting each first differs through the ReLU)
        v, t = self.proj.video(cls), self.proj.text(text.mean(1))
        out: dict[str, torch.Tensor] = {"video_vec": v.detach(), "text_vec": t.detach()}
        out["loss_contrastive"] = (info_nce(v, t, obj.temperature, groups, gather)
                                   if obj.contrastive else cls.new_zeros(()))
        if order is None:
            out["loss"] = out["loss_contrastive"]
            return out
        sort_in = text.detach() if obj.stop_gradient else text
        logits = self.sorter(tokens, sort_in)
        out["video_tokens"], out["transcripts"] = tokens.detach(), sort_in.detach()
        out["loss_sort"] = sort_loss(logits, order, self.sorter.modeling)
        out["loss"] = out["loss_contrastive"] + obj.sort_lambda * out["loss_sort"]
        with torch.no_grad():
            out["sort_acc"], out["sort_seq_acc"] = sort_accuracy(logits, order,
                                                                 self.sorter.modeling)
        return out
