"""The TVTS sample pipeline, declaratively: windows -> shuffle -> TSN frames -> decode ->
crop/normalise -> mask; tokenisation happens in `TVTSCollate`, inside the loader workers.

A video that fails (cannot be decoded, cannot give K non-empty windows) is reported in the
sample's `skipped` list with its reason and another video is drawn: never an all-zero clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from tvts.config import Params, S3Config
from tvts.data.frames import tsn_indices
from tvts.data.transforms import crop_box, crop_clip
from tvts.data.windows import (
    NoValidSample,
    Windows,
    draw_windows,
    shuffle,
    windows_possible,
)
from tvts.errors import UserError
from tvts.models.video_vit import sample_keep
from tvts.storage import local_file
from tvts.video.decoders import DecodeError, VideoReader, open_video
from tvts.video.packed import PackedIndex

RESAMPLE_LIMIT = 16


@dataclass(frozen=True)
class SampleSpec:
    num_frames: int
    frame_size: int
    resize_short: int
    decoder: str
    num_transcripts: int
    window_s: tuple[float, float]
    gap_s: float
    mask_ratio: float
    tubelet: int
    patch_size: int
    samples_per_decode: int = 1
    max_tries: int = 20
    train: bool = True

    @classmethod
    def from_params(cls, params: Params, train: bool = True,
                    mask_ratio: float | None = None) -> SampleSpec:
        d, v = params.data, params.model.video
        return cls(d.num_frames, d.frame_size, d.resize_short, d.decoder, d.num_transcripts,
                   d.window_s, d.gap_s, d.mask_ratio if mask_ratio is None else mask_ratio,
                   v.tubelet, v.patch_size, d.samples_per_decode if train else 1, d.max_tries,
                   train)

    @property
    def slices(self) -> int:
        return max(1, self.num_frames // self.tubelet)

    @property
    def patches(self) -> int:
        return (self.frame_size // self.patch_size) ** 2


@dataclass(frozen=True)
class VideoEntry:
    video_id: str
    uri: str
    duration_s: float
    times: np.ndarray  # word start times, sorted
    words: list[str]
    size: tuple[int, int] | None = None  # (width, height) from the videos table


def load_entries(videos: pl.DataFrame, words: pl.DataFrame) -> list[VideoEntry]:
    grouped = {vid: g.sort("start_s") for (vid,), g in words.group_by(["video_id"])}
    entries = []
    for v in videos.sort("video_id").iter_rows(named=True):
        g = grouped.get(v["video_id"])
        if g is None:
            continue
        size = (v["width"], v["height"]) if v.get("width") and v.get("height") else None
        entries.append(VideoEntry(v["video_id"], v["uri"], v["duration_s"],
                                  g["start_s"].to_numpy(), g["word"].to_list(), size))
    return entries


def split_feasible(entries: list[VideoEntry], spec: SampleSpec
                   ) -> tuple[list[VideoEntry], list[tuple[str, str]]]:
    """Entries that can give a sample, and (video_id, reason) for those that never can."""
    ok, never = [], []
    for e in entries:
        if windows_possible(e.times, e.duration_s, spec.num_transcripts, spec.window_s[0],
                            spec.gap_s):
            ok.append(e)
        else:
            never.append((e.video_id, f"cannot hold {spec.num_transcripts} non-empty windows "
                                      f"of {spec.window_s[0]} s with {spec.gap_s} s gaps"))
    return ok, never


def _draw(entry: VideoEntry, spec: SampleSpec, rng: np.random.Generator
          ) -> tuple[Windows, list[str], np.ndarray]:
    windows = draw_windows(rng, entry.duration_s, entry.times, entry.words,
                           spec.num_transcripts, spec.window_s, spec.gap_s, spec.max_tries)
    shuffled, order = shuffle(rng, windows.transcripts)
    return windows, [" ".join(t) for t in shuffled], order


def draw_transcripts(entry: VideoEntry, spec: SampleSpec, rng: np.random.Generator
                     ) -> tuple[list[str], np.ndarray]:
    """A sample's shuffled transcripts and each one's true position, without the video."""
    _, texts, order = _draw(entry, spec, rng)
    return texts, order


def build_samples(entry: VideoEntry, spec: SampleSpec, rng: np.random.Generator,
                  path: str | None = None, reader: VideoReader | None = None
                  ) -> list[dict[str, Any]]:
    """`samples_per_decode` samples from one decoded span (same transcripts). The frames come
    from `reader` (e.g. packed shards) or from decoding `path` (default: the entry's URI).
    A reader with `encoded` set gives JPEG bytes, to be decoded on the training device: the
    sample then holds `video_jpeg` (T byte tensors) and `crop` (top, left, size) instead of
    `video`, drawn with the same random numbers."""
    windows, texts, order = _draw(entry, spec, rng)
    if reader is None:
        reader = open_video(path or entry.uri, spec.decoder, spec.resize_short, entry.size)
    t0, t1 = windows.span
    index_sets = [tsn_indices(reader.frame_times, t0, t1, spec.num_frames, spec.train, rng)
                  for _ in range(spec.samples_per_decode)]
    union = np.unique(np.concatenate(index_sets))
    encoded = getattr(reader, "encoded", False)
    decoded = reader.get_encoded(union) if encoded else reader.get_frames(union)
    where = {int(f): i for i, f in enumerate(union)}
    samples = []
    for indices in index_sets:
        picked = [where[int(i)] for i in indices]
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        if encoded:
            top, left = crop_box(reader.height, reader.width, spec.frame_size, spec.train, rng)
            video = {"video_jpeg": [torch.frombuffer(bytearray(decoded[i]), dtype=torch.uint8)
                                    for i in picked],
                     "crop": torch.tensor([top, left, spec.frame_size])}
        else:
            video = {"video": crop_clip(decoded[picked], spec.frame_size, spec.train, rng)}
        samples.append({
            **video,
            "keep": sample_keep(spec.slices, spec.patches, spec.mask_ratio, gen),
            "text": texts,
            "order": torch.from_numpy(order),
            "video_id": entry.video_id,
            "frame_indices": torch.from_numpy(indices),
        })
    return samples


class NoSampleError(UserError):
    """Draw after draw gave no sample: the videos tried and why, and what to do. Raised in a
    DataLoader worker, torch re-raises it in the trainer with the worker's traceback in the
    message; only the message is kept, so the CLI prints it as any bad-input error."""

    def __init__(self, skipped: list[tuple[str, str]] | str, set_size: int = 0):
        if isinstance(skipped, str):  # torch's re-raise: "Caught ... Original Traceback ..."
            tag = f"{type(self).__module__}.{type(self).__qualname__}: "
            super().__init__(skipped.rsplit(tag, 1)[-1].rstrip("\n"))
            return
        reasons = dict(skipped)
        super().__init__(
            f"{len(skipped)} draws in a row gave no sample ({len(reasons)} of the set's "
            f"{set_size} videos tried, all failing): "
            + "; ".join(f"{v}: {why}" for v, why in sorted(reasons.items()))
            + ". A pack shard that failed its check is rewritten by `dvc repro pack` (or "
            "`tvts stage pack`); a video that cannot be read is left out by removing it from "
            "the corpus.")


class TVTSDataset(Dataset):
    def __init__(self, entries: list[VideoEntry], spec: SampleSpec, seed: int = 0,
                 s3: S3Config | None = None, cache_dir: str = ".cache/tvts", repeats: int = 1,
                 packed: PackedIndex | None = None, device_decode: bool = False):
        """`repeats`: each video appears this many times per epoch, with other windows.
        `packed`: read the frames from pack shards instead of decoding the videos;
        `device_decode`: leave their JPEGs for the training device to decode."""
        if not entries:
            raise ValueError("no videos with words to sample from")
        self.entries, self.spec, self.seed = entries, spec, seed
        self.s3, self.cache_dir = s3 or S3Config(), cache_dir
        self.repeats = repeats
        self.packed, self.device_decode = packed, device_decode
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries) * self.repeats

    def _samples(self, entry: VideoEntry, rng: np.random.Generator) -> list[dict[str, Any]]:
        if self.packed is not None:
            return build_samples(entry, self.spec, rng, reader=self.packed.reader(
                entry.video_id, self.device_decode))
        path = str(local_file(entry.uri, self.s3, self.cache_dir))
        return build_samples(entry, self.spec, rng, path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        skipped: list[tuple[str, str]] = []
        index %= len(self.entries)
        for _ in range(RESAMPLE_LIMIT):
            entry = self.entries[index]
            try:
                return {"samples": self._samples(entry, rng), "skipped": skipped}
            except (DecodeError, NoValidSample, OSError) as e:
                skipped.append((entry.video_id, f"{type(e).__name__}: {e}"))
                if len({v for v, _ in skipped}) == len(self.entries):
                    break  # every video of the set failed: drawing again cannot help
                index = int(rng.integers(len(self.entries)))
        raise NoSampleError(skipped, len(self.entries))


class TVTSCollate:
    """Stacks samples and tokenises the transcripts (runs inside the loader workers)."""

    def __init__(self, tokenizer_name: str, max_tokens: int):
        self.tokenizer_name, self.max_tokens = tokenizer_name, max_tokens
        self._tokenizer = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}  # each worker loads its own

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if self._tokenizer is None:
            from tvts.models.text_encoder import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_name)
        samples = [s for it in items for s in it["samples"]]
        k = len(samples[0]["text"])
        enc = self._tokenizer([t for s in samples for t in s["text"]], padding=True,
                              truncation=True, max_length=self.max_tokens, return_tensors="pt")
        b = len(samples)
        if "video_jpeg" in samples[0]:  # decoded on the training device (`batch_to`)
            # one byte tensor and the sizes, not B x T small ones: pinning memory and moving
            # batches between processes then cost one tensor each
            jpegs = [j for s in samples for j in s["video_jpeg"]]
            video = {"video_jpeg": torch.cat(jpegs),
                     "jpeg_sizes": torch.tensor([len(j) for j in jpegs]),
                     "crop": torch.stack([s["crop"] for s in samples])}
        else:
            video = {"video": torch.stack([s["video"] for s in samples])}
        return {
            **video,
            "keep": torch.stack([s["keep"] for s in samples]),
            "input_ids": enc["input_ids"].reshape(b, k, -1),
            "attention_mask": enc["attention_mask"].reshape(b, k, -1),
            "order": torch.stack([s["order"] for s in samples]),
            "video_ids": [s["video_id"] for s in samples],
            "skipped": [x for it in items for x in it["skipped"]],
        }


@dataclass
class CorpusSplits:
    train: list[VideoEntry]
    val: list[VideoEntry]  # chooses checkpoints
    test: list[VideoEntry]  # only reported


def split_entries(entries: list[VideoEntry], videos: pl.DataFrame) -> CorpusSplits:
    """The corpus' train / val / test videos (the videos table's `split`). A corpus too small
    to have a validation split lends it a tenth of its training videos, and at least two once
    it has four (with one, held-out retrieval hits whatever the model does and the
    other-video control has no other video); one without a test split has none (evaluate then
    reports on val, and says so)."""
    split = dict(zip(videos["video_id"], videos["split"], strict=True))
    parts: dict[str, list[VideoEntry]] = {"train": [], "val": [], "test": []}
    for e in entries:
        name = split.get(e.video_id, "train")
        parts[name if name in parts else "train"].append(e)
    if not parts["val"] and len(parts["train"]) > 1:
        train = parts["train"]
        k = max(1 if len(train) < 4 else 2, math.ceil(len(train) / 10))
        parts["val"], parts["train"] = train[-k:], train[:-k]
    return CorpusSplits(parts["train"], parts["val"], parts["test"])
