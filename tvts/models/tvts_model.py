"""The TVTS model: video ViT + text encoder + projections + sort transformer, and its loss.

L = [contrastive.enabled] * InfoNCE(video [CLS], mean of the K transcripts)
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

    def embed(self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Video and text vectors in the common space (text: mean over the K transcripts)."""
        cls, _ = self.video(video, keep)
        text = self.encode_text(input_ids, attention_mask)
        return self.proj.video(cls), self.proj.text(text).mean(1)

    def contrastive(self, video: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor, keep: torch.Tensor | None = None
                    ) -> dict[str, torch.Tensor]:
        """Contrastive loss alone (post-pretraining on captioned images and clips)."""
        v, t = self.embed(video, input_ids, attention_mask, keep)
        loss = info_nce(v, t, self.objective.temperature)
        return {"loss": loss, "loss_contrastive": loss}

    def forward(self, video: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, order: torch.Tensor,
                keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss parts and sort accuracy for a batch of K shuffled transcripts per clip.

        `order` (B, K) is each transcript's true position.
        """
        obj = self.objective
        cls, tokens = self.video(video, keep)
        text = self.encode_text(input_ids, attention_mask)
        zero = cls.new_zeros(())
        out: dict[str, torch.Tensor] = {}
        out["loss_contrastive"] = (
            info_nce(self.proj.video(cls), self.proj.text(text).mean(1), obj.temperature)
            if obj.contrastive else zero)
        sort_in = text.detach() if obj.stop_gradient else text
        logits = self.sorter(tokens, sort_in)
        out["loss_sort"] = sort_loss(logits, order, self.sorter.modeling)
        out["loss"] = out["loss_contrastive"] + obj.sort_lambda * out["loss_sort"]
        with torch.no_grad():
            out["sort_acc"], out["sort_seq_acc"] = sort_accuracy(logits, order,
                                                                 self.sorter.modeling)
        return out
