"""What the trainer optimises and validates: TVTS pretraining and contrastive post-pretraining."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tvts.data.transforms import batch_to
from tvts.losses import group_ids
from tvts.metrics import hit_rates
from tvts.models.sort_controls import other_video_hits


def _ddp_scale(out: dict[str, torch.Tensor], world: int) -> dict[str, torch.Tensor]:
    """DDP averages gradients over processes, but each process's InfoNCE (on the gathered
    batch) already carries the whole batch's gradient for its own rows: scaling that part by
    the world size makes the averaged gradient equal the single-process one."""
    backward = out["loss"] + (world - 1) * out["loss_contrastive"] if world > 1 else out["loss"]
    return {**out, "loss_backward": backward}


def _groups(batch: dict[str, Any]) -> torch.Tensor | None:
    """The video of each row (None when rows are captioned items, each its own)."""
    ids = batch.get("video_ids")
    return group_ids(ids).to(batch["video"].device) if ids is not None else None


def _retrieval(videos: list[torch.Tensor], texts: list[torch.Tensor], ids: list[str]
               ) -> dict[str, float]:
    """R@1 in percent, video->text and text->video, over every validation clip, ties averaged
    (`hit_rates`, as the evaluate stage). A retrieved clip of the query's own video counts as
    a hit: other clips of one video share its subject, and scoring them as misses put R@1 at
    the chance of 1/clips-per-video."""
    v = F.normalize(torch.cat(videos).float(), dim=-1)
    t = F.normalize(torch.cat(texts).float(), dim=-1)
    sim = v @ t.T
    g = group_ids(ids)
    same = g[:, None] == g[None, :]
    return {"val/r1_v2t": hit_rates(sim, same, (1,), with_ranks=False)["R@1"],
            "val/r1_t2v": hit_rates(sim.T, same.T, (1,), with_ranks=False)["R@1"],
            # what a model that cannot tell the clips apart scores
            "val/r1_chance": float((same.sum(1).double() / len(g)).mean() * 100)}


class PretrainTask:
    """TVTS: contrastive + sort.lambda x transcript sorting."""

    sorting = True

    def leaves_parameters_unused(self, model: nn.Module) -> bool:
        """The sorter gets no gradient without the sort loss, the projections none without
        the contrastive one."""
        obj = getattr(getattr(model, "module", model), "objective", None)
        # an ordering baseline leaves the transcript sorter unused
        return (obj is None or not obj.contrastive or obj.sort_lambda == 0 or not self.sorting
                or obj.target != "transcripts")

    def loss(self, model: nn.Module, batch: dict[str, Any], world: int
             ) -> dict[str, torch.Tensor]:
        order = batch["order"] if self.sorting else None
        out = model(batch["video"], batch["input_ids"], batch["attention_mask"], order,
                    batch["keep"], _groups(batch))
        return _ddp_scale(out, world)

    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device
                 ) -> dict[str, float]:
        m = getattr(model, "module", model)
        n = 0
        keys = ["loss", "sort_acc", "sort_seq_acc"] if self.sorting else ["loss"]
        sums = dict.fromkeys(keys, 0.0)
        videos, texts, other, ids = [], [], [], []
        for batch in loader:
            batch = batch_to(batch, device)
            out = m(batch["video"], batch["input_ids"], batch["attention_mask"],
                    batch["order"] if self.sorting else None, batch["keep"], _groups(batch),
                    gather=False)  # validation runs on rank 0 alone
            ids += batch["video_ids"]
            b = len(batch["video"])
            for k in keys:
                sums[k] += float(out[k]) * b
            videos.append(out["video_vec"])
            texts.append(out["text_vec"])
            if "video_tokens" in out:  # transcript sorting: the other-video control
                other.append(other_video_hits(m.sorter, out, batch))
            n += b
        result = {f"val/{k}": v / n for k, v in sums.items()} | _retrieval(videos, texts, ids)
        hits = torch.cat(other) if other else torch.zeros(0)
        if hits.numel():
            # the gap to val/sort_acc is what sorting takes from the video
            result["val/sort_acc_other_video"] = float(hits.float().mean())
        return result


class ContrastiveTask(PretrainTask):
    """Post-pretraining: the contrastive loss alone."""

    sorting = False
