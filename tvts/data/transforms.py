"""Clip transforms: crop (random for training, centre for evaluation; one crop for all frames
of a clip) and normalisation to (C, T, H, W) float."""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_box(height: int, width: int, size: int, train: bool,
             rng: np.random.Generator | None = None) -> tuple[int, int]:
    """Top-left corner of a size x size crop."""
    if height < size or width < size:
        raise ValueError(f"frames of {width}x{height} are smaller than the {size} px crop")
    if train:
        assert rng is not None
        return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    return (height - size) // 2, (width - size) // 2


def to_clip(frames: np.ndarray, size: int, train: bool,
            rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> normalised float32 (3, T, size, size)."""
    top, left = crop_box(frames.shape[1], frames.shape[2], size, train, rng)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + size, left:left + size]))
    x = x.permute(3, 0, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return x.sub_(mean).div_(std)
