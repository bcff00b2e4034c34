"""What the top-5 figure (the paper's figure 4) shows of a set's fine-tuned encoders: a few
validation clips, each with its middle frame and each encoder's five highest class scores."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from tvts.eval.finetune import FinetuneResult
from tvts.video.decoders import DecodeError, open_video


def middle_frame(uri: str, size: int = 96) -> str | None:
    """The clip's middle frame as a PNG data URL (None when it does not decode)."""
    try:
        reader = open_video(uri, "pyav", size)
        frame = reader.get_frames(np.array([len(reader.frame_times) // 2]))[0]
    except (DecodeError, OSError, ValueError):
        return None
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def top5_clips(results: dict[str, FinetuneResult], uris: dict[str, str], count: int
               ) -> list[dict[str, Any]]:
    """The first `count` test clips (by id) every encoder scored, with their top-5 classes."""
    common = sorted(set.intersection(*(set(r.ids) for r in results.values())))[:count]
    clips = []
    for clip_id in common:
        scores: dict[str, list[tuple[str, float]]] = {}
        label = ""
        for name, r in results.items():
            row = r.ids.index(clip_id)
            label = r.actual[row]
            p = r.probabilities[row]
            top = np.argsort(-p)[:5]
            scores[name] = [(r.classes[i], float(p[i])) for i in top]
        clips.append({"id": clip_id, "label": label, "frame": middle_frame(uris[clip_id]),
                      "scores": scores})
    return clips
