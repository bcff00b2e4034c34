"""Captioned clips (WebVid's CSV) and captioned images (CC3M's TSV) for post-pretraining,
and grouping them into homogeneous batches that alternate between the two."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tvts.data.frames import tsn_indices
from tvts.data.transforms import crop_clip
from tvts.errors import UserError
from tvts.models.video_vit import sample_keep
from tvts.video.decoders import DecodeError, open_video, resize_shape


@dataclass(frozen=True)
class CaptionedItem:
    item_id: str
    path: str
    caption: str
    image: bool


def _existing_root(root: str | Path, key: str, layout: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"{key} = {str(root)!r}: no such directory. Point it at a {layout} "
                        "(the demo's is made by the corpus stage: dvc repro corpus)")
    return path


def read_webvid(root: str | Path, key: str = "post_pretrain.clips") -> list[CaptionedItem]:
    """WebVid layout: `results_*.csv` (videoid, contentUrl, duration, page_dir, name) and
    `videos/<page_dir>/<videoid>.mp4`."""
    root = _existing_root(root, key, "WebVid folder (results_*.csv + videos/)")
    csvs = sorted(root.glob("results_*.csv"))
    if not csvs:
        raise UserError(f"{key} = {str(root)!r}: no WebVid results_*.csv in it")
    items = []
    for path in csvs:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                video = root / "videos" / row["page_dir"] / f"{row['videoid']}.mp4"
                if video.exists():
                    items.append(CaptionedItem(row["videoid"], str(video), row["name"], False))
    return items


def read_cc3m(root: str | Path, key: str = "post_pretrain.images") -> list[CaptionedItem]:
    """CC3M layout: `Train_GCC-training.tsv` (caption <TAB> url) and `url_map.tsv`
    (url <TAB> local image path, relative to the root) for the images downloaded."""
    root = _existing_root(root, key, "CC3M folder (Train_GCC-training.tsv + url_map.tsv)")
    tsv, mapping_file = root / "Train_GCC-training.tsv", root / "url_map.tsv"
    if not tsv.exists() or not mapping_file.exists():
        raise UserError(f"{key} = {str(root)!r}: needs Train_GCC-training.tsv and url_map.tsv")
    mapping = dict(line.split("\t", 1) for line in mapping_file.read_text().splitlines() if line)
    items = []
    for i, line in enumerate(tsv.read_text().splitlines()):
        caption, _, url = line.partition("\t")
        local = mapping.get(url)
        if local and (root / local).exists():
            items.append(CaptionedItem(f"cc3m-{i}", str(root / local), caption, True))
    return items


class CaptionedDataset(Dataset):
    def __init__(self, items: list[CaptionedItem], frames: int, frame_size: int,
                 resize_short: int, decoder: str, tubelet: int, patch_size: int,
                 train: bool = True, seed: int = 0, max_tries: int = 20):
        if not items:
            raise UserError("no captioned items found")
        self.max_tries = max_tries
        self.items, self.frames, self.size = items, frames, frame_size
        self.resize_short, self.decoder, self.train, self.seed = resize_short, decoder, train, seed
        self.slices = max(1, frames // tubelet)
        self.patches = (frame_size // patch_size) ** 2
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _frames(self, item: CaptionedItem, rng: np.random.Generator) -> np.ndarray:
        if item.image:
            img = Image.open(item.path).convert("RGB")
            img = img.resize(resize_shape(*img.size, self.resize_short), Image.BILINEAR)
            return np.asarray(img)[None]
        reader = open_video(item.path, self.decoder, self.resize_short)
        end = float(reader.frame_times[-1]) + 1e-3
        return reader.get_frames(tsn_indices(reader.frame_times, 0.0, end, self.frames,
                                             self.train, rng))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One sample; an item that does not decode is replaced by another drawn at random
        (seeded), so a batch keeps its size: under DDP every rank must bring the same
        number of rows to the gathered contrastive batch."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        skipped: list[tuple[str, str]] = []
        for _ in range(self.max_tries):
            item = self.items[index]
            try:
                frames = self._frames(item, rng)
            except (DecodeError, OSError, ValueError) as e:
                skipped.append((item.item_id, f"{type(e).__name__}: {e}"))
                index = int(rng.integers(len(self.items)))
                continue
            return {"samples": [{
                "video": crop_clip(frames, self.size, self.train, rng),
                "keep": sample_keep(self.slices, self.patches, 0.0),
                "text": [item.caption], "order": torch.zeros(1, dtype=torch.long),
                "video_id": item.item_id}], "skipped": skipped}
        raise UserError(
            f"{self.max_tries} captioned items in a row failed to decode (the last: "
            f"{skipped[-1][0]}: {skipped[-1][1]}); check the files under post_pretrain.images "
            "and post_pretrain.clips")


class AlternatingGroups(Dataset):
    """Items are whole homogeneous batches, alternating between the datasets given
    (images, clips, images, ...): clips of different lengths never share a batch. Under DDP
    (`ranks` processes, each taking consecutive items of a step in turn) the alternation is
    by blocks of `ranks` groups, so every process draws the same modality at each step, as
    the release does: a gathered contrastive batch never mixes images and clips."""

    def __init__(self, datasets: list[Dataset], group_size: int, seed: int = 0,
                 ranks: int = 1):
        self.datasets, self.group, self.seed, self.ranks = datasets, group_size, seed, ranks
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        for ds in self.datasets:
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)
        g = np.random.default_rng([self.seed, epoch])
        per = []
        for k, ds in enumerate(self.datasets):
            order = g.permutation(len(ds))
            per.append([(k, order[i : i + self.group].tolist())
                        for i in range(0, len(order) - self.group + 1, self.group)])
        n = min(len(p) for p in per) // self.ranks * self.ranks
        self.groups = [p[j] for i in range(0, n, self.ranks) for p in per
                       for j in range(i, i + self.ranks)]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, members = self.groups[index]
        items = [self.datasets[k][i] for i in members]
        return {"samples": [s for it in items for s in it["samples"]],
                "skipped": [x for it in items for x in it["skipped"]]}
