"""Initialise the video ViT from image ViT weights (official MAE or timm state dicts).

The 2D patch kernel is inflated over the tubelet and divided by its length, so a static clip
gives the image model's response; the spatial position table is resized when the grid
differs. Every key is accounted for in a report, and a mismatch that matters is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tvts.models.video_vit import VideoViT

# Image-model parts that are not part of the encoder (classifier heads, MAE's decoder).
IGNORED_PREFIXES = ("head.", "fc_norm.", "decoder", "mask_token", "pre_logits.", "norm_pix")
# Parts an image model cannot provide.
VIDEO_ONLY = ("pos_embed_temporal",)


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} tensors (inflated: {self.inflated or 'none'}, "
                f"resized: {self.resized or 'none'}); left at init: {self.missing or 'none'}; "
                f"ignored (heads/decoder): {len(self.ignored)}; unexpected: "
                f"{self.unexpected or 'none'}")


def read_state_dict(source: str | Path | dict[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict from a dict, a safetensors file, or a torch checkpoint (MAE: ['model'])."""
    if isinstance(source, dict):
        sd = source
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"model.video.init = {str(path)!r}: no such file")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _resize_pos(table: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, [1+]N, W) -> (1, 1 + grid^2, W); a table without a [CLS] row gets a zero one."""
    n = table.shape[1]
    has_cls = math.isqrt(n) ** 2 != n
    cls, patches = (table[:, :1], table[:, 1:]) if has_cls else (
        torch.zeros_like(table[:, :1]), table)
    g = math.isqrt(patches.shape[1])
    if g != grid:
        p = patches.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        p = F.interpolate(p.float(), size=(grid, grid), mode="bicubic", align_corners=False)
        patches = p.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(table.dtype)
    return torch.cat([cls, patches], dim=1)


def load_image_vit(model: VideoViT, source: str | Path | dict[str, Any],
                   strict: bool = True) -> LoadReport:
    sd = read_state_dict(source)
    own = model.state_dict()
    report = LoadReport()
    new: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        target = "pos_embed_spatial" if key == "pos_embed" else key
        if target not in own:
            (report.ignored if key.startswith(IGNORED_PREFIXES) else report.unexpected).append(key)
            continue
        if target == "patch_embed.proj.weight" and value.ndim == 4:
            t = model.cfg.tubelet
            value = value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
            report.inflated.append(key)
        if target == "pos_embed_spatial" and value.shape != own[target].shape:
            value = _resize_pos(value, model.cfg.grid)
            report.resized.append(key)
        if value.shape != own[target].shape:
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)} does not fit the "
                             f"model's {tuple(own[target].shape)} (check model.video width, "
                             "depth, heads and patch_size against the checkpoint)")
        new[target] = value.to(own[target].dtype)
        report.loaded.append(key)
    report.missing = [k for k in own if k not in new]
    serious = [k for k in report.missing if not k.startswith(VIDEO_ONLY)] + report.unexpected
    if strict and serious:
        raise ValueError("image weights do not match the video encoder: " + report.summary())
    model.load_state_dict(new, strict=False)
    return report
