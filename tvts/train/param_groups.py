"""Optimiser parameter groups for fine-tuning a ViT: layer-wise lr decay (BEiT / MAE /
VideoMAE) and no weight decay on biases, norms, position tables and the [CLS] token.

Layer 0 is the embedding (cube embedding, [CLS], position tables), layer i the i-th block,
layer depth + 1 everything after the blocks (final norm, head). A group's `lr_scale` is
`layer_decay ** (depth + 1 - layer)`; the trainer multiplies the scheduled lr by it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

EMBEDDING = ("patch_embed", "cls_token", "pos_embed_spatial", "pos_embed_temporal")
NO_DECAY_NAMES = ("cls_token", "pos_embed_spatial", "pos_embed_temporal")


def vit_layer(name: str, depth: int, prefix: str = "video.") -> int:
    """The layer of parameter `name` (see the module docstring)."""
    if name.startswith(prefix):
        rest = name[len(prefix):]
        if rest.startswith(EMBEDDING):
            return 0
        if rest.startswith("blocks."):
            return int(rest.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float,
                       depth: int, prefix: str = "video.") -> list[dict[str, Any]]:
    """Parameter groups by (layer, decayed or not), each with its `lr_scale`."""
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES
        layer = vit_layer(name, depth, prefix)
        group = groups.setdefault((layer, decay), {
            "params": [], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": layer_decay ** (depth + 1 - layer), "layer": layer})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]
