"""Clip-level augmentations of the fine-tuning recipe, from timm: RandAugment with one draw
per clip, and mixup / cutmix on a batch of clips.

timm draws RandAugment's ops and magnitudes at every call (from Python's and NumPy's global
generators), so calling it frame by frame would give every frame other ops; here each frame
is augmented from the same generator state, drawn once per clip from the sample's own
generator. timm's `Mixup` boxes CutMix over the last two axes and a clip batch is
(B, C, T, H, W): the frames are folded into the channels first, so a box covers the same
(H, W) region of every frame.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from tvts.data.transforms import IMAGENET_MEAN


class ClipRandAugment:
    """timm's RandAugment (`rand-m7-n4-mstd0.5-inc1` ...) applied alike to every frame."""

    def __init__(self, config: str, frame_size: int):
        from timm.data.auto_augment import rand_augment_transform

        hparams = {"translate_const": int(frame_size * 0.45),
                   "img_mean": tuple(round(255 * m) for m in IMAGENET_MEAN)}
        self.transform = rand_augment_transform(config, hparams)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (T, H, W, 3) -> the same shape, every frame through the same ops."""
        seed = int(rng.integers(2**31))
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            out = []
            for frame in frames:
                random.seed(seed)
                np.random.seed(seed)
                out.append(np.asarray(self.transform(Image.fromarray(frame))))
        finally:  # the caller's generators are left as they were
            random.setstate(py_state)
            np.random.set_state(np_state)
        return np.stack(out)


class ClipMixup:
    """Mixup / CutMix of a clip batch with label-smoothed soft targets (timm's `Mixup`,
    batch mode). An odd batch (the last of an epoch) is not mixed: its targets are only
    smoothed."""

    def __init__(self, classes: int, mixup: float, cutmix: float, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1):
        from timm.data import Mixup

        self.classes, self.label_smoothing = classes, label_smoothing
        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob,
                         switch_prob=switch_prob, mode="batch",
                         label_smoothing=label_smoothing, num_classes=classes)

    def __call__(self, video: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, C, T, H, W), labels (B,) -> mixed video, soft targets (B, classes)."""
        from timm.data.mixup import mixup_target

        if len(video) % 2:
            return video, mixup_target(labels, self.classes, 1.0, self.label_smoothing)
        b, c, t, h, w = video.shape
        folded = video.reshape(b, c * t, h, w).clone()  # timm mixes in place
        mixed, target = self.mix(folded, labels)
        return mixed.reshape(b, c, t, h, w), target
