"""The SVO-Probes test (the paper's appendix C.2, table 11): zero-shot, each probe's
sentence against its positive image and its negative (another subject, verb or object).
An image is called positive when its cosine similarity with the sentence in the contrastive
space exceeds a threshold rho; precision per concept = positives called among the images
called, over the probes whose negative changes that concept. Beside it, threshold-free: the
share of probes whose positive scores above their negative (pair accuracy).

Images enter the video encoder as one frame, repeated to fill a cube (post-pretraining
feeds images the same way), resized to the short side and centre-cropped like test clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from PIL import Image

from tvts.data.transforms import crop_clip, normalize
from tvts.eval.protocols import encode_captions
from tvts.video.decoders import resize_shape

CONCEPTS = ("subj", "verb", "obj")


def load_image(path: str, frame_size: int, resize_short: int) -> torch.Tensor:
    """uint8 (3, 1, frame_size, frame_size): short side resized, centre crop."""
    img = Image.open(path).convert("RGB")
    img = img.resize(resize_shape(*img.size, resize_short), Image.BILINEAR)
    return crop_clip(np.asarray(img)[None], frame_size, False)


@torch.no_grad()
def image_vectors(models: dict[str, Any], paths: Sequence[str], frame_size: int,
                  resize_short: int, device: torch.device, batch: int = 64
                  ) -> dict[str, torch.Tensor]:
    """Images -> unit vectors in each model's contrastive space; each image is read once for
    all the models."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    for i in range(0, len(paths), batch):
        clips = normalize(torch.stack([load_image(p, frame_size, resize_short)
                                       for p in paths[i:i + batch]]).to(device))
        for name, model in models.items():
            cls, _ = model.video(clips)
            out[name].append(F.normalize(model.proj.video(cls).float(), dim=-1).cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def similarities(models: dict[str, Any], tokenizer: Any, probes: pl.DataFrame,
                 frame_size: int, resize_short: int, max_tokens: int, device: torch.device,
                 batch: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model, the cosine similarity of each probe's sentence with its positive and its
    negative image."""
    paths = sorted(set(probes["pos_uri"]) | set(probes["neg_uri"]))
    row = {p: i for i, p in enumerate(paths)}
    pos_rows = [row[p] for p in probes["pos_uri"]]
    neg_rows = [row[p] for p in probes["neg_uri"]]
    sentences = sorted(set(probes["sentence"]))
    col = {s: i for i, s in enumerate(sentences)}
    text_rows = [col[s] for s in probes["sentence"]]
    out = {}
    for name, images in image_vectors(models, paths, frame_size, resize_short, device,
                                      batch).items():
        text = encode_captions(models[name], tokenizer, sentences, max_tokens, device,
                               batch)[text_rows]
        out[name] = ((images[pos_rows] * text).sum(-1).numpy(),
                     (images[neg_rows] * text).sum(-1).numpy())
    return out


def svo_metrics(pos: np.ndarray, neg: np.ndarray, neg_types: Sequence[str],
                thresholds: Sequence[float]) -> dict[str, float | None]:
    """`<concept>@<rho>`: precision (None when no image of that concept scores above rho),
    `<concept>_pair_acc`: positive above negative, in [0, 1]; `<concept>_probes`: counts."""
    kinds = np.asarray(neg_types)
    out: dict[str, float | None] = {}
    for rho in thresholds:
        for c in CONCEPTS:
            sel = kinds == c
            tp, fp = int((pos[sel] > rho).sum()), int((neg[sel] > rho).sum())
            out[f"{c}@{rho:g}"] = tp / (tp + fp) if tp + fp else None
    for c in CONCEPTS:
        sel = kinds == c
        out[f"{c}_pair_acc"] = float((pos[sel] > neg[sel]).mean()) if sel.any() else None
        out[f"{c}_probes"] = int(sel.sum())
    out["mean_sim_pos"], out["mean_sim_neg"] = float(pos.mean()), float(neg.mean())
    return out
