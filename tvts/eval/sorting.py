"""Transcript-sort accuracy (the paper's table 13): the sorter on held-out transcripts with
their own video, with the text alone (video tokens removed), and with another clip's video.

The gap between the first and the two others is what sorting takes from the video.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from tvts.data.transforms import batch_to
from tvts.losses import predicted_order
from tvts.models.sort_controls import other_video_hits, text_only_hits

CONDITIONS = ("video", "text_only", "other_video")


def chance(k: int) -> dict[str, float]:
    """Per transcript 1/K; a whole sequence 1/K! as a permutation, 1/K^K as K guesses."""
    return {"chance_acc": 1 / k, "chance_seq_acc_permutation": 1 / math.factorial(k),
            "chance_seq_acc_independent": 1 / k**k}


@torch.no_grad()
def sort_accuracies(models: dict[str, nn.Module], loader: DataLoader, device: torch.device
                    ) -> dict[str, dict[str, float]]:
    """Per model, per-transcript and whole-sequence accuracy under each condition. The
    held-out clips are decoded once and every model sorts the same samples."""
    hits: dict[str, dict[str, list[torch.Tensor]]] = {
        name: {c: [] for c in CONDITIONS} for name in models}
    k = 0
    for batch in loader:
        batch = batch_to(batch, device)
        k = batch["order"].shape[1]
        for name, model in models.items():
            model.eval()
            out = model(batch["video"], batch["input_ids"], batch["attention_mask"],
                        batch["order"])
            pred = predicted_order(model.sorter(out["video_tokens"], out["transcripts"]),
                                   model.sorter.modeling, k)
            hits[name]["video"].append((pred == batch["order"]).cpu())
            hits[name]["text_only"].append(text_only_hits(model.sorter, out, batch))
            hits[name]["other_video"].append(other_video_hits(model.sorter, out, batch))
    results = {}
    for name, by_cond in hits.items():
        result: dict[str, float] = {}
        for cond, parts in by_cond.items():
            h = torch.cat(parts) if parts else torch.zeros(0, k, dtype=torch.bool)
            if not h.numel():
                continue  # other_video needs two held-out videos
            result[f"acc_{cond}"] = float(h.float().mean())
            result[f"seq_acc_{cond}"] = float(h.all(-1).float().mean())
            result[f"transcripts_{cond}"] = int(h.numel())
        results[name] = result | chance(k)
    return results
