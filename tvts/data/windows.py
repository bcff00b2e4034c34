"""Transcript windows (paper eq. 1): K windows of l seconds with gaps, S_k = s + (k-1)(l+gap)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Windows:
    starts: np.ndarray  # S_k, shape (K,)
    length: float  # l
    transcripts: list[list[str]]  # words whose time lies in [S_k, E_k]

    @property
    def span(self) -> tuple[float, float]:
        return float(self.starts[0]), float(self.starts[-1] + self.length)


class NoValidSample(Exception):
    """A video that cannot give K non-empty windows; the message is the reason."""


def window_starts(begin: float, k: int, length: float, gap: float) -> np.ndarray:
    return begin + np.arange(k) * (length + gap)


def words_in(times: np.ndarray, words: list[str], lo: float, hi: float) -> list[str]:
    a, b = np.searchsorted(times, lo, side="left"), np.searchsorted(times, hi, side="right")
    return words[a:b]


def draw_windows(rng: np.random.Generator, duration: float, times: np.ndarray,
                 words: list[str], k: int, length_range: tuple[float, float], gap: float,
                 tries: int) -> Windows:
    """Random windows inside the video with every transcript non-empty; redraws up to `tries`.

    `times` are the words' start times, sorted.
    """
    lo_len, hi_len = length_range
    if duration < k * lo_len + (k - 1) * gap:
        raise NoValidSample(f"too short: {duration:.1f} s cannot hold {k} windows of "
                            f"{lo_len} s with {gap} s gaps")
    if len(words) < k:
        raise NoValidSample(f"only {len(words)} words for {k} transcripts")
    for _ in range(tries):
        length = float(rng.uniform(lo_len, hi_len))
        span = k * length + (k - 1) * gap
        if span > duration:
            continue
        begin = float(rng.uniform(0.0, duration - span))
        starts = window_starts(begin, k, length, gap)
        transcripts = [words_in(times, words, s, s + length) for s in starts]
        if all(transcripts):
            return Windows(starts, length, transcripts)
    raise NoValidSample(f"no draw of {k} windows out of {tries} had a word in every window")


def shuffle(rng: np.random.Generator, transcripts: list[list[str]]
            ) -> tuple[list[list[str]], np.ndarray]:
    """Shuffled transcripts and, for each, its true position (the sort label)."""
    perm = rng.permutation(len(transcripts))
    return [transcripts[i] for i in perm], perm.astype(np.int64)


def windows_possible(starts: np.ndarray, duration: float, k: int, length: float, gap: float,
                     step: float = 0.25) -> bool:
    """Whether some start gives K windows of `length` s (gaps `gap`), each with a word."""
    span = k * length + (k - 1) * gap
    if duration < span or starts.size == 0:
        return False
    starts = np.sort(starts)
    begins = np.arange(0.0, duration - span + 1e-9, step)
    ok = np.ones(len(begins), bool)
    for i in range(k):
        lo = begins + i * (length + gap)
        count = np.searchsorted(starts, lo + length, side="right") - np.searchsorted(starts, lo)
        ok &= count > 0
    return bool(ok.any())
