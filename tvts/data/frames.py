"""TSN frame sampling over a time span, through the stream's real frame timestamps."""

from __future__ import annotations

import numpy as np


def time_to_index(frame_times: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The frame shown at time t: the last frame starting at or before t."""
    idx = np.searchsorted(frame_times, t, side="right") - 1
    return np.clip(idx, 0, len(frame_times) - 1)


def tsn_times(t0: float, t1: float, m: int, train: bool,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """M equal segments of [t0, t1]: a random time in each (training) or the centres."""
    edges = np.linspace(t0, t1, m + 1)
    if train:
        if rng is None:
            raise ValueError("training sampling needs a random generator")
        return edges[:-1] + rng.random(m) * (edges[1:] - edges[:-1])
    return (edges[:-1] + edges[1:]) / 2


def tsn_indices(frame_times: np.ndarray, t0: float, t1: float, m: int, train: bool,
                rng: np.random.Generator | None = None) -> np.ndarray:
    return time_to_index(frame_times, tsn_times(t0, t1, m, train, rng))
