"""Which frames of a video the leak search looks at, decoded, and the crops indexed."""

from __future__ import annotations

import math

import numpy as np

from tvts.video.decoders import DecodeError, open_video


def clip_times(duration_s: float, n: int) -> np.ndarray:
    """`n` times evenly spread over a clip (centres of n equal parts)."""
    return (np.arange(n) + 0.5) * (duration_s / n)


def query_times(duration_s: float, fps: float, max_frames: int) -> np.ndarray:
    """One frame every 1/fps seconds (at most `max_frames`, then evenly spread)."""
    n = min(max_frames, max(1, math.floor(duration_s * fps)))
    return clip_times(duration_s, n)


def read_frames_at(path: str, times: np.ndarray, short_side: int, backend: str = "pyav"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The frames nearest to `times` (each decoded once): uint8 (N, H, W, 3) and their times."""
    reader = open_video(path, backend, short_side)
    ft = np.asarray(reader.frame_times, dtype=np.float64)
    if ft.size == 0:
        raise DecodeError(f"{path}: no frames")
    idx = np.clip(np.searchsorted(ft, times), 0, len(ft) - 1)
    left = np.clip(idx - 1, 0, len(ft) - 1)
    idx = np.where(np.abs(ft[left] - times) < np.abs(ft[idx] - times), left, idx)
    idx = np.unique(idx)
    return reader.get_frames(idx), ft[idx]


def centre_crop(frames: np.ndarray, scale: float) -> np.ndarray:
    """The centred `scale` share of each side (scale 1 = the frames themselves)."""
    if scale >= 1.0:
        return frames
    h, w = frames.shape[1:3]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    return frames[:, top:top + ch, left:left + cw]
