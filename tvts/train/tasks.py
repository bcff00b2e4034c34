"""What the trainer optimises and validates: TVTS pretraining and contrastive post-pretraining."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tvts.data.transforms import batch_to
from tvts.eval.metrics import retrieval_metrics


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _ddp_scale(out: dict[str, torch.Tensor], world: int) -> dict[str, torch.Tensor]:
    """DDP averages gradients over processes, but each process's InfoNCE (on the gathered
    batch) already carries the whole batch's gradient for its own rows: scaling that part by
    the world size makes the averaged gradient equal the single-process one."""
    backward = out["loss"] + (world - 1) * out["loss_contrastive"] if world > 1 else out["loss"]
    return {**out, "loss_backward": backward}


def _retrieval(videos: list[torch.Tensor], texts: list[torch.Tensor]) -> dict[str, float]:
    v = F.normalize(torch.cat(videos).float(), dim=-1)
    t = F.normalize(torch.cat(texts).float(), dim=-1)
    sim = v @ t.T
    return {"val/r1_v2t": retrieval_metrics(sim, (1,))["R@1"],
            "val/r1_t2v": retrieval_metrics(sim.T, (1,))["R@1"]}


class PretrainTask:
    def loss(self, model: nn.Module, batch: dict[str, Any], world: int
             ) -> dict[str, torch.Tensor]:
        out = model(batch["video"], batch["input_ids"], batch["attention_mask"], batch["order"],
                    batch["keep"])
        return _ddp_scale(out, world)

    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device
                 ) -> dict[str, float]:
        m = _unwrap(model)
        n = 0
        sums = {"val/loss": 0.0, "val/sort_acc": 0.0, "val/sort_seq_acc": 0.0}
        videos, texts = [], []
        for batch in loader:
            batch = batch_to(batch, device)
            out = m(batch["video"], batch["input_ids"], batch["attention_mask"], batch["order"])
            b = len(batch["video"])
            sums["val/loss"] += float(out["loss"]) * b
            sums["val/sort_acc"] += float(out["sort_acc"]) * b
            sums["val/sort_seq_acc"] += float(out["sort_seq_acc"]) * b
            v, t = m.embed(batch["video"], batch["input_ids"], batch["attention_mask"])
            videos.append(v)
            texts.append(t)
            n += b
        return {k: v / n for k, v in sums.items()} | _retrieval(videos, texts)


class ContrastiveTask:
    def loss(self, model: nn.Module, batch: dict[str, Any], world: int
             ) -> dict[str, torch.Tensor]:
        m = _unwrap(model) if not isinstance(model, nn.parallel.DistributedDataParallel) \
            else model.module
        out = m.contrastive(batch["video"], batch["input_ids"], batch["attention_mask"])
        return _ddp_scale(out, world)

    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device
                 ) -> dict[str, float]:
        m = _unwrap(model)
        videos, texts, loss, n = [], [], 0.0, 0
        for batch in loader:
            batch = batch_to(batch, device)
            out = m.contrastive(batch["video"], batch["input_ids"], batch["attention_mask"])
            v, t = m.embed(batch["video"], batch["input_ids"], batch["attention_mask"])
            videos.append(v)
            texts.append(t)
            loss += float(out["loss"]) * len(batch["video"])
            n += len(batch["video"])
        return {"val/loss": loss / n} | _retrieval(videos, texts)
