"""The audio track of a video container, read and resampled with PyAV (no ffmpeg CLI)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray | None:
    """Mono int16 samples at `sample_rate`, or None when the container has no audio stream."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        chunks = []
        for frame in c.decode(audio=0):
            for rf in resampler.resample(frame):
                chunks.append(rf.to_ndarray().reshape(-1))
        for rf in resampler.resample(None):
            chunks.append(rf.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def read_audio_float(path: str | Path, sample_rate: int = 16000) -> np.ndarray | None:
    """Mono float32 in [-1, 1] (what Whisper takes), or None without an audio stream."""
    pcm = read_audio(path, sample_rate)
    return None if pcm is None else pcm.astype(np.float32) / 32768.0
