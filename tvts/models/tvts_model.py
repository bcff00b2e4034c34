"""The TVTS model: video ViT + text encoder + projections + sort transformer, and its loss.

L = [contrastive.enabled] * InfoNCE(video [CLS], projected mean of the K transcripts)
    + sort.lambda * L_sort(sorter(video tokens, transcripts)),
with the transcripts entering the sorter through stop-gradient when sort.stop_gradient.
With `sort.target` an ordering baseline (`clips`, `frames_given_transcripts`), L_sort is that
baseline's loss on the clip's shuffled segments instead (tvts/models/ordering.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tvts.losses import info_nce, sort_accuracy, sort_loss
from tvts.models.ordering import (
    ClipOrderHead,
    FrameReorderer,
    in_true_order,
    shuffled_segments,
)
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
    target: str = "transcripts"  # what L_sort orders (sort.target)

# how each ordering baseline's logits are laid out (tvts.losses.sort_loss)
BASELINE_MODELING = {"clips": "factorial", "frames_given_transcripts": "kway"}


class TVTSModel(nn.Module):
    def __init__(self, video: VideoViT, text: TextEncoder, sorter: SortTransformer,
                 embed_dim: int, objective: ObjectiveConfig,
                 ordering: ClipOrderHead | FrameReorderer | None = None):
        super().__init__()
        self.video, self.text, self.sorter = video, text, sorter
        self.proj = Projections(video.cfg.width, text.dim, embed_dim)
        self.objective = objective
        if (objective.target != "transcripts") != (ordering is not None):
            raise ValueError(f"sort.target {objective.target!r} and the ordering head "
                             f"{type(ordering).__name__} do not go together")
        # kept out of the state dict when absent: TVTS checkpoints keep their keys
        self.ordering = ordering

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
        if obj.target == "transcripts":
            logits = self.sorter(tokens, sort_in)
            out["video_tokens"], out["transcripts"] = tokens.detach(), sort_in.detach()
        else:
            logits = self._order_segments(video, keep, order, sort_in)
        modeling = self.sort_modeling
        out["loss_sort"] = sort_loss(logits, order, modeling)
        out["loss"] = out["loss_contrastive"] + obj.sort_lambda * out["loss_sort"]
        with torch.no_grad():
            out["sort_acc"], out["sort_seq_acc"] = sort_accuracy(logits, order, modeling)
        return out

    @property
    def sort_modeling(self) -> str:
        """The layout of L_sort's logits: the sorter's, or the ordering baseline's."""
        return BASELINE_MODELING.get(self.objective.target, self.sorter.modeling)

    def _order_segments(self, video: torch.Tensor, keep: torch.Tensor | None,
                        order: torch.Tensor, transcripts: torch.Tensor) -> torch.Tensor:
        """The ordering baselines: the clip's segments shuffled by `order` (the transcripts'
        shuffle, so one permutation draw serves both), each encoded on its own."""
        b, k = order.shape
        segments, seg_keep = shuffled_segments(video, keep, order, self.video.cfg.tubelet)
        seg_cls, _ = self.video(segments, seg_keep)
        seg_cls = seg_cls.reshape(b, k, -1)
        if self.objective.target == "clips":
            return self.ordering(seg_cls)
        return self.ordering(in_true_order(transcripts, order), seg_cls)
