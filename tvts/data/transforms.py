"""Clip transforms. In the loader: crop (random for training, centre for evaluation; one crop
for all frames of a clip), kept as uint8 (C, T, H, W). On the training device: normalisation
to float, where it is nearly free and the host sends a quarter of the bytes."""

from __future__ import annotations

from typing import Any

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


def crop_clip(frames: np.ndarray, size: int, train: bool,
              rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (3, T, size, size)."""
    top, left = crop_box(frames.shape[1], frames.shape[2], size, train, rng)
    # numpy's strided copy: about 2x torch's permute().contiguous() on uint8 (bench/)
    crop = frames[:, top:top + size, left:left + size].transpose(3, 0, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(crop))


def normalize(video: torch.Tensor) -> torch.Tensor:
    """uint8 clips (..., 3, T, H, W) -> float32 normalised with the ImageNet mean and std."""
    shape = (3, 1, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=video.device).view(shape) * 255.0
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=video.device).view(shape) * 255.0)
    return (video.float() - mean) * inv_std


def batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors to `device`; uint8 clips are normalised there. Clips that come as JPEG frames
    (packed shards, `pack.decode: device`) are decoded and cropped there first."""
    batch = dict(batch)
    if "video_jpeg" in batch:
        from tvts.video.packed import decode_clips

        jpegs = torch.split(batch.pop("video_jpeg"), batch.pop("jpeg_sizes").tolist())
        batch["video"] = decode_clips(jpegs, batch.pop("crop"), device)
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
           for k, v in batch.items()}
    if torch.is_tensor(out.get("video")) and out["video"].dtype == torch.uint8:
        out["video"] = normalize(out["video"])
    return out
