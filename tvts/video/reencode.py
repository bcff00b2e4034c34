"""Re-encode videos for fast random access: shorter side resized, short keyframe interval.

Seeking decodes from the keyframe before the target, so with YouTube's usual 250-frame GOP a
TSN clip costs up to 250 decoded frames per sampled frame; a 16-frame GOP bounds that at 16.

    tvts reencode SRC_DIR DST_DIR --short-side 256 --gop 16
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from tvts.storage import atomic_path
from tvts.video.decoders import resize_shape


def reencode(src: str | Path, dst: str | Path, short_side: int | None = 256, gop: int = 16,
             crf: int = 23) -> Path:
    """H.264 (+ AAC when there is audio) with the given keyframe interval, written atomically."""
    dst = Path(dst)
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        rate = vin.average_rate or vin.guessed_rate
        w, h = resize_shape(vin.codec_context.width, vin.codec_context.height, short_side)
        ain = inp.streams.audio[0] if inp.streams.audio else None
        with atomic_path(dst) as tmp, av.open(str(tmp), "w", format="mp4") as out:
            keyint = f"keyint={gop}:min-keyint={gop}:scenecut=0"
            vout = out.add_stream("libx264", rate=rate, options={
                "crf": str(crf), "preset": "veryfast", "x264-params": keyint})
            vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
            aout = out.add_stream("aac", rate=ain.codec_context.sample_rate,
                                  layout="mono") if ain is not None else None
            resampler = (av.AudioResampler(format="fltp", layout="mono",
                                           rate=ain.codec_context.sample_rate)
                         if ain is not None else None)
            streams = [s for s in (vin, ain) if s is not None]
            for frame in inp.decode(*streams):
                if isinstance(frame, av.VideoFrame):
                    img = frame.to_ndarray(format="rgb24", width=w, height=h)
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                    vf.pts, vf.time_base = frame.pts, frame.time_base
                    out.mux(vout.encode(vf))
                elif aout is not None and resampler is not None:
                    frame.pts = None
                    for rf in resampler.resample(frame):
                        out.mux(aout.encode(rf))
            out.mux(vout.encode(None))
            if aout is not None:
                out.mux(aout.encode(None))
    return dst


def reencode_dir(src_dir: str | Path, dst_dir: str | Path, extensions: list[str],
                 short_side: int | None = 256, gop: int = 16) -> list[Path]:
    """Every video under `src_dir` to the same relative path under `dst_dir` (as .mp4)."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    done = []
    for p in sorted(src_dir.rglob("*")):
        if p.is_file() and p.suffix.lower() in extensions:
            target = (dst_dir / p.relative_to(src_dir)).with_suffix(".mp4")
            target.parent.mkdir(parents=True, exist_ok=True)
            done.append(reencode(p, target, short_side, gop))
    return done
