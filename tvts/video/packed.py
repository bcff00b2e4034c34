"""Frames packed into JPEG shards by the `pack` stage, read behind the VideoReader interface.

A shard is a plain tar (readable by `tar`, WebDataset and friends) holding many videos. Each
video is its JPEG members `<video_id>/<frame>.jpg` followed by its frame table
`<video_id>/frames.npy`: time, byte offset in the shard, size and CRC-32 of every JPEG. The
packed index (one row per video) points at the frame table, so it stays small at any scale.

A reader for one video reads its frame table once, then for a clip one byte range covering
the frames asked for (one local read or one ranged S3 GET: a video's frames lie together),
checks each JPEG's CRC and decodes it with libjpeg-turbo. With `encoded=True` it hands the
JPEG bytes on undecoded, and `decode_clips` decodes a whole batch on the training device
(nvJPEG on a GPU). Truncated shards and corrupt JPEGs raise DecodeError with the reason, so
the sample builder skips the video and reports it, and leave `<shard>.corrupt` beside a local
shard (`report_corrupt`): the next `pack` run rewrites that shard, and the new file changes the
shards folder's hash, so `dvc repro` runs `pack` again.
"""

from __future__ import annotations

import contextlib
import functools
import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from tvts.config import S3Config
from tvts.storage import atomic_write_text, join_uri, read_range
from tvts.video.decoders import DecodeError

FRAME_TABLE = np.dtype([("time_s", "<f8"), ("frame", "<i4"), ("offset", "<i8"),
                        ("size", "<i4"), ("crc32", "<u4")])


CORRUPT_SUFFIX = ".corrupt"


def corrupt_marker(shard: str | Path) -> Path:
    """The note a reader leaves beside a local shard that failed its check."""
    shard = Path(shard)
    return shard.with_name(shard.name + CORRUPT_SUFFIX)


def report_corrupt(shard_uri: str, reason: str) -> None:
    """Best effort: a shard on S3 or in a read-only folder is found by `tvts stage pack
    --verify` instead."""
    if "://" in shard_uri:
        return
    with contextlib.suppress(OSError):
        atomic_write_text(corrupt_marker(shard_uri), reason + "\n")


def encode_table(table: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, table.astype(FRAME_TABLE), allow_pickle=False)
    return buf.getvalue()


def decode_table(data: bytes) -> np.ndarray:
    table = np.load(io.BytesIO(data), allow_pickle=False)
    if table.dtype != FRAME_TABLE:
        raise ValueError(f"frame table of dtype {table.dtype}, expected {FRAME_TABLE}")
    return table


def decode_jpeg_rgb(data: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3) through Pillow's libjpeg-turbo."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class PackedVideo:
    """A row of the packed index."""

    video_id: str
    shard: str
    table_offset: int
    table_size: int
    table_crc32: int
    width: int
    height: int


class PackedIndex:
    """video_id -> its packed frames, with the shards under `shards_uri` (folder or s3://)."""

    def __init__(self, index: pl.DataFrame, shards_uri: str, s3: S3Config | None = None):
        self.shards_uri, self.s3 = shards_uri, s3 or S3Config()
        # the table itself (Arrow columns, cheap to send to loader workers) and row numbers
        self._index = index.select(list(PackedVideo.__dataclass_fields__))
        self._row = {v: i for i, v in enumerate(index["video_id"].to_list())}

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._row

    def __len__(self) -> int:
        return len(self._row)

    def reader(self, video_id: str, encoded: bool = False) -> PackedReader:
        if video_id not in self._row:
            raise DecodeError(f"video {video_id} is not in the packed index (not packed: see "
                              "data/pack/quarantine.parquet)")
        video = PackedVideo(**self._index.row(self._row[video_id], named=True))
        return PackedReader(video, join_uri(self.shards_uri, video.shard), self.s3, encoded)


class PackedReader:
    """One packed video: `frame_times`, `width`, `height`, `get_frames` as a VideoReader;
    `get_encoded` for the checked JPEG bytes."""

    def __init__(self, video: PackedVideo, shard_uri: str, s3: S3Config, encoded: bool = False):
        self.video, self.uri, self.s3, self.encoded = video, shard_uri, s3, encoded
        self.width, self.height = video.width, video.height
        data = self._read(video.table_offset, video.table_size, "frame table")
        if zlib.crc32(data) != video.table_crc32:
            raise self._corrupt(f"{shard_uri}: the frame table of {video.video_id} is corrupt "
                                "(CRC mismatch); rerun `tvts stage pack` to rewrite the shard")
        try:
            self._table = decode_table(data)
        except ValueError as e:
            raise DecodeError(f"{shard_uri}: unreadable frame table of {video.video_id}: {e}"
                              ) from None
        if len(self._table) == 0:
            raise DecodeError(f"{shard_uri}: {video.video_id} has no packed frames")
        self.frame_times = self._table["time_s"]

    def _read(self, offset: int, size: int, what: str) -> bytes:
        try:
            data = read_range(self.uri, offset, size, self.s3)
        except Exception as e:  # OSError locally; botocore's errors (missing key, range) on S3
            raise DecodeError(f"{self.uri}: cannot read the {what} of {self.video.video_id}: "
                              f"{type(e).__name__}: {e}") from None
        if len(data) < size:
            raise self._corrupt(f"{self.uri}: shard truncated: the {what} of "
                                f"{self.video.video_id} ends {size - len(data)} bytes past the "
                                "end of the file; rerun `tvts stage pack` to rewrite it")
        return data

    def _corrupt(self, message: str) -> DecodeError:
        report_corrupt(self.uri, message)
        return DecodeError(message)

    def get_encoded(self, indices: np.ndarray) -> list[bytes]:
        """The JPEG bytes of the packed frames `indices`, CRC-checked, in the order asked."""
        rows = self._table[np.asarray(indices, dtype=np.int64)]
        start = int(rows["offset"].min())
        end = int((rows["offset"] + rows["size"]).max())
        span = self._read(start, end - start, f"frames {rows['frame'][:4].tolist()}...")
        out = []
        for r in rows:
            jpeg = span[int(r["offset"]) - start:int(r["offset"]) - start + int(r["size"])]
            if zlib.crc32(jpeg) != int(r["crc32"]):
                raise self._corrupt(f"{self.uri}: frame {int(r['frame'])} of "
                                    f"{self.video.video_id} is corrupt (CRC mismatch); rerun "
                                    "`tvts stage pack` to rewrite the shard")
            out.append(jpeg)
        return out

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        frames = []
        for jpeg, i in zip(self.get_encoded(indices), indices, strict=True):
            try:
                frames.append(decode_jpeg_rgb(jpeg))
            except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors on bad JPEG data
                raise DecodeError(f"{self.uri}: packed frame {int(i)} of "
                                  f"{self.video.video_id} does not decode: {e}") from None
        return np.stack(frames)


@functools.cache
def jpeg_batch_decoder() -> Callable[..., list[torch.Tensor]]:
    """TorchCodec's `decode_jpeg` where it loads (it needs FFmpeg's shared libraries), else
    torchvision's (deprecated since 0.29 for TorchCodec's; bundled with torch): the same
    call, batched nvJPEG on a GPU, libjpeg-turbo on the CPU."""
    try:
        from torchcodec.decoders import decode_jpeg

        return decode_jpeg
    except Exception:  # not installed, or its libraries do not load
        from torchvision.io import decode_jpeg

        return decode_jpeg


def decode_clips(jpegs: Sequence[torch.Tensor], crops: torch.Tensor, device: torch.device
                 ) -> torch.Tensor:
    """The JPEG frames of B clips (B x T uint8 byte tensors, clip-major) and each clip's crop
    (B, 3: top, left, size) -> uint8 (B, 3, T, size, size) on `device`, decoded there in one
    batch."""
    b = len(crops)
    if b == 0 or len(jpegs) % b:
        raise ValueError(f"{len(jpegs)} JPEG frames do not split into {b} clips")
    t, size = len(jpegs) // b, int(crops[0, 2])
    images = jpeg_batch_decoder()(list(jpegs), mode="RGB", device=device)
    out = torch.empty((b, 3, t, size, size), dtype=torch.uint8, device=device)
    for i, (top, left, _) in enumerate(crops.tolist()):
        clip = torch.stack(images[i * t:(i + 1) * t], dim=1)  # (3, T, H, W)
        out[i] = clip[:, :, top:top + size, left:left + size]
    return out
