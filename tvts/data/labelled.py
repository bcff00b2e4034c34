"""Labelled clips (action recognition) with multi-view evaluation: T temporal x S spatial
views per video, as VideoMAE's protocol tests (2 x 3 on SSV2, 5 x 3 on K400)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tvts.data.frames import tsn_indices
from tvts.data.transforms import crop_clip
from tvts.video.decoders import DecodeError, open_video


@dataclass(frozen=True)
class LabelledItem:
    item_id: str
    path: str
    label: int


def spatial_offsets(length: int, size: int, views: int) -> list[int]:
    """Crop starts along the long side: 1 view = centre, 3 = start/centre/end, ..."""
    if views == 1:
        return [(length - size) // 2]
    return [round(i * (length - size) / (views - 1)) for i in range(views)]


def temporal_spans(t0: float, t1: float, views: int) -> list[tuple[float, float]]:
    """`views` equal sub-spans covering [t0, t1] (the whole clip when views = 1)."""
    edges = np.linspace(t0, t1, views + 1)
    return [(float(a), float(b)) for a, b in itertools.pairwise(edges)]


class LabelledClips(Dataset):
    """Training: one random clip per item. Evaluation: `temporal_views x spatial_views` clips,
    returned together (B, V, C, T, H, W) so their predictions can be averaged per video."""

    def __init__(self, items: list[LabelledItem], frames: int, frame_size: int,
                 resize_short: int, decoder: str, train: bool, temporal_views: int = 1,
                 spatial_views: int = 1, seed: int = 0,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 max_tries: int = 20):
        """`augment`: applied to a training clip's frames (uint8 (T, H, W, 3)) before the
        crop. A training item that does not decode is replaced by another drawn at random
        (seeded; at most `max_tries` in a row), so a batch keeps its size."""
        self.augment, self.max_tries = augment, max_tries
        self.items, self.frames, self.size = items, frames, frame_size
        self.resize_short, self.decoder, self.train, self.seed = resize_short, decoder, train, seed
        self.tv, self.sv = temporal_views, spatial_views
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _train_clip(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        skipped: list[tuple[str, str]] = []
        for _ in range(self.max_tries):
            item = self.items[index]
            try:
                reader = open_video(item.path, self.decoder, self.resize_short)
                times = reader.frame_times
                idx = tsn_indices(times, 0.0, float(times[-1]) + 1e-3, self.frames, True, rng)
                frames = reader.get_frames(idx)
            except DecodeError as e:
                skipped.append((item.item_id, str(e)))
                index = int(rng.integers(len(self.items)))
                continue
            if self.augment is not None:
                frames = self.augment(frames, rng)
            clip = crop_clip(frames, self.size, True, rng)
            return {"clips": clip[None], "label": item.label, "item_id": item.item_id,
                    "skipped": skipped}
        raise DecodeError(f"{self.max_tries} training clips in a row failed to decode (the "
                          f"last: {skipped[-1][0]}: {skipped[-1][1]})")

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.train:
            return self._train_clip(index, rng)
        try:
            reader = open_video(item.path, self.decoder, self.resize_short)
        except DecodeError as e:
            return {"clips": None, "label": item.label, "item_id": item.item_id,
                    "skipped": [(item.item_id, str(e))]}
        times = reader.frame_times
        end = float(times[-1]) + 1e-3
        spans = temporal_spans(0.0, end, self.tv)
        index_sets = [tsn_indices(times, a, b, self.frames, False) for a, b in spans]
        union = np.unique(np.concatenate(index_sets))
        decoded = reader.get_frames(union)
        where = {int(f): i for i, f in enumerate(union)}
        h, w = decoded.shape[1:3]
        clips = []
        for idx in index_sets:
            frames = decoded[[where[int(i)] for i in idx]]
            for off in spatial_offsets(max(h, w), self.size, self.sv):
                top, left = ((off, (w - self.size) // 2) if h > w
                             else ((h - self.size) // 2, off))
                crop = frames[:, top:top + self.size, left:left + self.size]
                clips.append(torch.from_numpy(np.ascontiguousarray(crop)).permute(3, 0, 1, 2))
        return {"clips": torch.stack(clips), "label": item.label, "item_id": item.item_id,
                "skipped": []}
