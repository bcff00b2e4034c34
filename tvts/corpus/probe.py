"""Probing a video file: duration, frame rate, size, audio; bad files raise ProbeError."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import av

_HASH_CHUNK = 1 << 20


class ProbeError(Exception):
    """The file is not a usable video; the message is the quarantine reason."""


@dataclass(frozen=True)
class Probe:
    duration_s: float
    fps: float
    width: int
    height: int
    has_audio: bool


def content_hash(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _last_frame_time(container: av.container.InputContainer, stream, end_s: float) -> float:
    """Time (on the stream's clock) of the last decodable frame, decoding only the final
    stretch before `end_s`."""
    tb = float(stream.time_base)
    target = max(0.0, end_s - 2.0)
    container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
    last = -1.0
    for frame in container.decode(stream):
        if frame.pts is not None:
            last = max(last, frame.pts * tb)
    return last


def _decodable_until(path: Path) -> float:
    """Time (on the stream's clock) of the last frame that decodes in a file whose end does
    not (cut short, corrupt tail), or -1 when none does. A faststart file indexes frames
    that are not there, so seeking near its end finds nothing: the packets are read first
    (no decoding: cheap) up to the last one present, then the stretch before it decoded."""
    last_packet = last = -1.0
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        tb = float(vs.time_base)
        try:
            for packet in container.demux(vs):
                if packet.size and packet.pts is not None:
                    last_packet = max(last_packet, packet.pts * tb)
        except av.error.FFmpegError:
            pass  # the cut: what was read so far is what there is
        if last_packet < 0:
            return -1.0
        container.seek(int(max(0.0, last_packet - 2.0) / tb), stream=vs, backward=True,
                       any_frame=False)
        try:
            for frame in container.decode(vs):
                if frame.pts is not None:
                    last = max(last, frame.pts * tb)
        except av.error.FFmpegError:
            pass  # the first frame that fails ends the decodable stretch
    return last


def probe_video(path: str | Path, verify_decode: bool = True) -> Probe:
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ProbeError(f"not a readable video container ({e.strerror or e})") from None
    with container:
        if not container.streams.video:
            raise ProbeError("no video stream")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        if fps <= 0:
            raise ProbeError("video stream has no frame rate")
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            raise ProbeError("duration unknown (no stream or container duration)")
        width, height = vs.codec_context.width, vs.codec_context.height
        if not width or not height:
            raise ProbeError("video stream has no frame size")
        has_audio = len(container.streams.audio) > 0
        if verify_decode:
            try:
                next(container.decode(vs))
            except StopIteration:
                raise ProbeError("no decodable video frame") from None
            except av.error.FFmpegError as e:
                raise ProbeError(f"first frame does not decode ({e.strerror or e})") from None
            # MPEG program / transport streams start their clock late (0.5 s and more) and
            # carry an estimated duration: times are taken from the first frame's
            start_s = (float(vs.start_time * vs.time_base)
                       if vs.start_time is not None and vs.time_base is not None else 0.0)
            try:
                last = _last_frame_time(container, vs, start_s + duration) - start_s
            except av.error.FFmpegError as e:
                until = _decodable_until(path) - start_s
                raise ProbeError(
                    f"truncated or corrupt: frames decode up to {max(until, 0):.2f} s of "
                    f"{duration:.2f} s, then fail ({e.strerror or e})"
                ) from None
            if last < 0:  # nothing at all decodes near the end: find where frames stop
                last = _decodable_until(path) - start_s
            # A frame lasts 1/fps: the last one starts about that long before the end; frames
            # that go on past an estimated duration extend it
            if last + 1.5 / fps > duration:
                duration = round(last + 1.0 / fps, 6)
            if last < duration - max(1.0, 0.05 * duration):
                raise ProbeError(
                    f"truncated: frames stop at {max(last, 0):.2f} s of {duration:.2f} s"
                )
    return Probe(duration, fps, int(width), int(height), has_audio)
