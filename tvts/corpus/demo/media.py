"""Encoding and decoding of the demo's media with PyAV (no ffmpeg command line needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from tvts.storage import atomic_path

# Encoder settings per container, chosen so that the same seed gives the same bytes:
# single-threaded, and x264 without adaptive quantisation, macroblock-tree or psy tuning,
# whose floating-point decisions were seen to vary between runs in one process.
_VIDEO_CODECS = {
    ".mp4": ("libx264", {"preset": "veryfast", "threads": "1",
                         "x264-params": "aq-mode=0:mbtree=0:psy=0"}),
    ".webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "threads": "1",
                             "row-mt": "0"}),
}
_VIDEO_CODECS[".mov"] = _VIDEO_CODECS[".mp4"]
_AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".webm": "libopus"}


def write_video(
    path: str | Path,
    frames: Sequence[np.ndarray] | np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 22050,
    quality: int = 23,
    gop: int | None = None,
    faststart: bool = False,
) -> None:
    """Write RGB uint8 frames (T, H, W, 3) and optional mono int16 audio, atomically.

    `quality` is x264's CRF / VP9's CQ level: higher is smaller and worse.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    codec, options = _VIDEO_CODECS[suffix]
    options = dict(options)
    height, width = frames[0].shape[:2]
    if codec == "libx264":
        options["crf"] = str(quality)
    else:
        options.update({"crf": str(quality), "b:v": "0"})
    # bitexact: no random segment UIDs or dates in the container (Matroska writes both).
    container_options = {"fflags": "+bitexact"}
    if faststart:
        container_options["movflags"] = "+faststart"
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=suffix[1:],
                 options=container_options) as out:
        vs = out.add_stream(codec, rate=fps, options=options)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = gop or 2 * fps
        vs.thread_count = 1
        if audio is not None:
            acodec = _AUDIO_CODECS[suffix]
            rate = sample_rate if acodec == "aac" else 48000
            as_ = out.add_stream(acodec, rate=rate, layout="mono")
        for i, rgb in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        if audio is not None:
            _encode_audio(out, as_, audio, sample_rate)
    return None


def _encode_audio(out: av.container.OutputContainer, stream, audio: np.ndarray,
                  sample_rate: int) -> None:
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono",
                                  rate=stream.codec_context.sample_rate)
    step = 1024
    pts = 0
    for start in range(0, len(audio), step):
        chunk = np.ascontiguousarray(audio[start : start + step], dtype=np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = pts
        pts += chunk.shape[1]
        for rf in resampler.resample(frame):
            out.mux(stream.encode(rf))
    for rf in resampler.resample(None):
        out.mux(stream.encode(rf))
    out.mux(stream.encode(None))


def read_frames(path: str | Path) -> np.ndarray:
    """All frames as RGB uint8 (T, H, W, 3)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
