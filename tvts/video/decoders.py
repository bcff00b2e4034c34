"""Frame decoding behind one interface: decord (default) and PyAV (fallback, everywhere).

Both expose the stream's real frame timestamps (so time -> frame index never assumes a
constant fps) and decode only the frames asked for, resized on decode. A file that cannot be
decoded raises DecodeError with the reason.
"""

from __future__ import annotations

import bisect
import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np


class DecodeError(Exception):
    """The video (or the frames asked for) cannot be decoded; the message is the reason."""


def resize_shape(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(w, h) with the shorter side `short_side` (even sizes), or the original size."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class VideoReader(Protocol):
    frame_times: np.ndarray  # start time in seconds of every frame, increasing
    width: int
    height: int

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, H, W, 3) at the reader's output size, in the order asked."""
        ...


class DecordReader:
    def __init__(self, path: str, short_side: int | None,
                 source_size: tuple[int, int] | None = None):
        import decord

        try:
            full = None  # a reader at the source size, when one was opened
            if source_size is None:  # decord has no size query: open and decode a frame
                full = decord.VideoReader(path, num_threads=1)
                h, w = full[0].shape[:2] if len(full) else (0, 0)
            else:
                w, h = source_size
            self.width, self.height = resize_shape(w, h, short_side)
            # decord resizes on decode, but fails for outputs narrower than 64 px: those
            # are decoded at full size and resized afterwards.
            resized = (self.width, self.height) != (w, h)
            self._resize_after = resized and self.width < 64
            if resized and not self._resize_after:
                self._vr = decord.VideoReader(path, width=self.width, height=self.height,
                                              num_threads=1)
            else:
                self._vr = full if full is not None else decord.VideoReader(path, num_threads=1)
            n = len(self._vr)
            self.frame_times = (self._vr.get_frame_timestamp(np.arange(n))[:, 0]
                                if n else np.zeros(0))
        except (decord.DECORDError, RuntimeError) as e:  # decord raises both
            raise DecodeError(f"decord cannot open {path}: {str(e).splitlines()[0]}") from None
        if n == 0:
            raise DecodeError(f"{path}: no video frames")

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        import decord

        try:
            frames = self._vr.get_batch(list(map(int, indices))).asnumpy()
        except (decord.DECORDError, RuntimeError) as e:
            raise DecodeError(f"decord failed on frames {list(indices)[:4]}...: "
                              f"{str(e).splitlines()[0]}") from None
        if self._resize_after:
            from PIL import Image

            size = (self.width, self.height)
            frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))
                               for f in frames])
        return frames


class PyAVReader:
    def __init__(self, path: str, short_side: int | None,
                 source_size: tuple[int, int] | None = None):
        # PyAV reads the size from the stream header while indexing: no hint needed
        import av

        self.path = path
        try:
            with av.open(path) as c:
                if not c.streams.video:
                    raise DecodeError(f"{path}: no video stream")
                s = c.streams.video[0]
                self._tb = float(s.time_base)
                packets = sorted((p.pts, p.is_keyframe) for p in c.demux(s)
                                 if p.pts is not None and p.size > 0)
                w, h = s.codec_context.width, s.codec_context.height
                start = s.start_time or 0
        except av.error.FFmpegError as e:
            raise DecodeError(f"PyAV cannot open {path}: {e.strerror or e}") from None
        if not packets:
            raise DecodeError(f"{path}: no video frames")
        self._pts = [p for p, _ in packets]
        self._key_pos = [i for i, (_, k) in enumerate(packets) if k] or [0]
        self.frame_times = (np.array(self._pts, dtype=np.float64) - start) * self._tb
        self.width, self.height = resize_shape(w, h, short_side)

    def _keyframe_before(self, index: int) -> int:
        return self._key_pos[max(bisect.bisect_right(self._key_pos, index) - 1, 0)]

    def get_frames(self, indices: np.ndarray) -> np.ndarray:
        import av

        wanted = sorted(set(map(int, indices)))
        by_pts = {self._pts[i]: i for i in wanted}
        got: dict[int, np.ndarray] = {}
        try:
            with av.open(self.path) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                pos = -1  # index of the last frame decoded
                # One frame iterator between seeks: a fresh `decode()` after the demuxer hit the
                # end would flush the decoder a second time (FFmpeg: "End of file").
                frames = None
                for target in wanted:
                    if target in got:
                        continue
                    key = self._keyframe_before(target)
                    if frames is None or pos < key or pos >= target:  # jump to its keyframe
                        c.seek(self._pts[key], stream=s, backward=True, any_frame=False)
                        frames = c.decode(s)
                    for frame in frames:
                        if frame.pts is None:
                            continue
                        pos = bisect.bisect_left(self._pts, frame.pts)
                        if frame.pts in by_pts:
                            got[by_pts[frame.pts]] = frame.to_ndarray(
                                format="rgb24", width=self.width, height=self.height)
                        if pos >= target:
                            break
        except av.error.FFmpegError as e:
            raise DecodeError(f"PyAV failed decoding {self.path}: {e.strerror or e}") from None
        missing = [i for i in wanted if i not in got]
        if missing:
            # seeking in MPEG program / transport streams can land after the keyframe asked
            # for: what was skipped comes from one pass from the start
            self._decode_in_order(missing, got)
            missing = [i for i in wanted if i not in got]
        if missing:
            raise DecodeError(f"{self.path}: frames {missing[:4]} could not be decoded "
                              "(truncated or corrupt)")
        return np.stack([got[int(i)] for i in indices])


    def _decode_in_order(self, indices: list[int], got: dict[int, np.ndarray]) -> None:
        import av

        by_pts = {self._pts[i]: i for i in indices}
        last = max(by_pts)
        try:
            with av.open(self.path) as c:
                for frame in c.decode(c.streams.video[0]):
                    if frame.pts in by_pts:
                        got[by_pts[frame.pts]] = frame.to_ndarray(
                            format="rgb24", width=self.width, height=self.height)
                    if frame.pts is not None and frame.pts >= last:
                        break
        except av.error.FFmpegError as e:
            raise DecodeError(f"PyAV failed decoding {self.path}: {e.strerror or e}") from None


BACKENDS = {"decord": DecordReader, "pyav": PyAVReader}
# MPEG program and transport streams: decord's frame index gives them no usable timestamps,
# so they are read with PyAV whichever backend is asked for
PYAV_ONLY_SUFFIXES = {".mpg", ".mpeg", ".m2v", ".ts", ".m2ts", ".mts", ".vob"}


def available_backend(name: str) -> str:
    """`name`, or PyAV when decord is not installed (it has no wheels for some platforms)."""
    if name == "decord" and importlib.util.find_spec("decord") is None:
        return "pyav"
    return name


def open_video(path: str | Path, backend: str = "decord", short_side: int | None = None,
               source_size: tuple[int, int] | None = None) -> VideoReader:
    """A reader whose frames come with their shorter side `short_side`. `source_size`
    (width, height), when the caller knows it (the videos table), spares a probe."""
    backend = available_backend(backend)
    if Path(path).suffix.lower() in PYAV_ONLY_SUFFIXES:
        backend = "pyav"
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoder {backend!r}; known: {', '.join(BACKENDS)}")
    path = str(path)
    if not Path(path).exists():
        raise DecodeError(f"{path}: no such file")
    if Path(path).stat().st_size == 0:
        raise DecodeError(f"{path}: empty file")
    return BACKENDS[backend](path, short_side, source_size)
