"""Write one pack shard: each of its videos decoded once, in order, at a fixed frame rate,
its frames JPEG-encoded into a tar with the frame table after them.

Deterministic: the same videos and settings give the same bytes (videos in id order, fixed
tar headers, the same JPEG encoder). A video that fails is left out whole and reported; the
shard is written to a temporary name and renamed when complete, and its manifest (index
rows, quarantine rows, timings) is written last: it is what marks the shard done.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvts.config import S3Config
from tvts.data.frames import time_to_index
from tvts.storage import atomic_path, atomic_write_text, local_file
from tvts.video.decoders import DecodeError, open_video
from tvts.video.packed import (
    FRAME_TABLE,
    PackedReader,
    PackedVideo,
    corrupt_marker,
    encode_table,
)

# Frames decoded per call: sequential decoding in pieces of bounded memory (256 frames of
# 477x268 RGB are 98 MB)
DECODE_CHUNK = 256
# Pack times land on frame boundaries (k / fps for a source at fps); floating-point noise in
# the stream's timestamps must not shift them to the frame before.
_TIME_EPS = 1e-6
_SUBSAMPLING = {"4:4:4": 0, "4:2:0": 2}  # Pillow's codes


@dataclass(frozen=True)
class PackSettings:
    fps: float
    jpeg_quality: int
    chroma: str
    short_side: int
    decoder: str


@dataclass(frozen=True)
class VideoToPack:
    video_id: str
    uri: str
    width: int | None
    height: int | None
    stamp: str  # size and mtime of a local file: a changed file is packed again


@dataclass(frozen=True)
class ShardJob:
    shard: int
    videos: tuple[VideoToPack, ...]
    settings: PackSettings
    out_dir: str
    fingerprint: str
    s3: S3Config
    cache_dir: str

    @property
    def name(self) -> str:
        return f"shard-{self.shard:05d}.tar"

    @property
    def path(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def manifest(self) -> Path:
        """Written last: a shard is done when its manifest matches its inputs."""
        return self.path.with_suffix(".json")


def video_end(frame_times: np.ndarray) -> float:
    """Where the last frame stops showing: its start plus the typical frame duration."""
    step = float(np.median(np.diff(frame_times))) if len(frame_times) > 1 else 0.0
    return float(frame_times[-1]) + step


def packed_indices(frame_times: np.ndarray, fps: float) -> np.ndarray:
    """The source frames shown at each multiple of 1 / fps before the video ends, each once,
    in order."""
    n = max(1, int(np.ceil(video_end(frame_times) * fps - _TIME_EPS)))
    times = np.arange(n) / fps + _TIME_EPS
    return np.unique(time_to_index(frame_times, times))


def encode_jpeg(frame: np.ndarray, quality: int, chroma: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # no optimize pass: the bytes depend on nothing but the pixels and the settings
    Image.fromarray(frame).save(buf, "JPEG", quality=quality, optimize=False,
                                subsampling=_SUBSAMPLING[chroma])
    return buf.getvalue()


def encode_video(path: str, video: VideoToPack, s: PackSettings
                 ) -> tuple[list[tuple[int, float, bytes]], int, int, float]:
    """[(frame index, time, jpeg)], width, height, seconds of video covered."""
    size = (video.width, video.height) if video.width and video.height else None
    reader = open_video(path, s.decoder, s.short_side, size)
    indices = packed_indices(reader.frame_times, s.fps)
    out = []
    for start in range(0, len(indices), DECODE_CHUNK):
        chunk = indices[start:start + DECODE_CHUNK]
        for i, frame in zip(chunk, reader.get_frames(chunk), strict=True):
            jpeg = encode_jpeg(frame, s.jpeg_quality, s.chroma)
            out.append((int(i), float(reader.frame_times[i]), jpeg))
    return out, reader.width, reader.height, video_end(reader.frame_times)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append a member with fixed metadata; returns the offset of its data in the file."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
    # the data ends where the tar's write position is, less the padding to 512-byte blocks
    return tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def write_shard(job: ShardJob) -> dict[str, Any]:
    """Pack the job's videos into its shard; returns (and writes) the shard's manifest. One
    video's frames are held in memory at a time, and written once all of them encoded."""
    t0 = time.perf_counter()
    index, quarantine = [], []
    video_s = 0.0
    shard_path = job.path
    shard_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(shard_path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for v in sorted(job.videos, key=lambda v: v.video_id):
            try:
                path = str(local_file(v.uri, job.s3, job.cache_dir))
                frames, w, h, span = encode_video(path, v, job.settings)
            except (DecodeError, OSError) as e:
                quarantine.append({"video_id": v.video_id, "uri": v.uri, "stage": "pack",
                                   "reason": f"{type(e).__name__}: {e}"})
                continue
            video_s += span
            table = np.zeros(len(frames), dtype=FRAME_TABLE)
            for row, (i, t, jpeg) in zip(table, frames, strict=True):
                row["offset"] = _add(tar, f"{v.video_id}/{i:07d}.jpg", jpeg)
                row["time_s"], row["frame"], row["size"] = t, i, len(jpeg)
                row["crc32"] = zlib.crc32(jpeg)
            data = encode_table(table)
            index.append({"video_id": v.video_id, "shard": job.name,
                          "table_offset": _add(tar, f"{v.video_id}/frames.npy", data),
                          "table_size": len(data), "table_crc32": zlib.crc32(data),
                          "frames": len(frames), "jpeg_bytes": int(table["size"].sum()),
                          "width": w, "height": h})
    manifest = {"fingerprint": job.fingerprint, "shard": job.name,
                "shard_bytes": shard_path.stat().st_size, "index": index,
                "quarantine": quarantine, "video_s": video_s,
                "seconds": time.perf_counter() - t0, "settings": asdict(job.settings)}
    atomic_write_text(job.manifest, json.dumps(manifest))
    corrupt_marker(shard_path).unlink(missing_ok=True)
    return manifest


def verify_shard(path: Path, index: list[dict[str, Any]], full: bool = False) -> str | None:
    """Why a written shard no longer holds what its manifest says, or None: the checks a
    training reader makes (each video's frame table against its CRC, a few KB per video), and
    with `full` every JPEG as well (the whole shard is read)."""
    fields = PackedVideo.__dataclass_fields__
    for row in index:
        try:
            reader = PackedReader(PackedVideo(**{k: row[k] for k in fields}), str(path),
                                  S3Config())
            if full:
                reader.get_encoded(np.arange(len(reader.frame_times)))
        except DecodeError as e:
            return str(e)
    return None
