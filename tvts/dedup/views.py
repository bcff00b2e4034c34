"""Views of a frame that the leak search describes, and how a matched view is named.

A downstream frame is indexed as it is and, per `ViewSet`, mirrored (a re-upload flips the
picture to dodge matching) and in luma only (a greyscale copy). Luma views live in their own
index, searched by the query frames that are themselves grey: a colour frame never meets them,
so the extra views cost false matches only among grey frames. Bars are cut from both sides
before any view is made. A pretraining frame that holds a picture-in-picture inset (a rectangle
bounded by straight edges) is searched with the inset as a frame of its own as well. A feature
row records its view as bits of `view`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tvts.dedup import YCBCR
from tvts.dedup.borders import BorderRule, InsetRule, crop_borders, insets

FLIPPED = 1
LUMA = 2
BORDERS_CUT = 4
INSET = 8
_NAMES = ((FLIPPED, "flipped"), (LUMA, "luma"), (BORDERS_CUT, "borders cut"),
          (INSET, "picture-in-picture inset"))



@dataclass(frozen=True)
class ViewSet:
    borders: bool = True
    flips: bool = True
    luma: bool = True
    # pretraining frames: an inset found in a frame is searched as a frame of its own
    insets: bool = True
    # A frame is grey when its mean |Cb| + |Cr| (0-255 scale) is at most this.
    grey_chroma: float = 4.0
    # part of the features' fingerprint: a changed rule re-extracts
    border_rule: BorderRule = field(default_factory=BorderRule)
    inset_rule: InsetRule = field(default_factory=InsetRule)


def describe(view: int, query_view: int = 0) -> str:
    """`flipped, luma, borders cut` (or `as is`) for an indexed view and the query's bits."""
    bits = int(view) | int(query_view)
    names = [name for bit, name in _NAMES if bits & bit]
    return ", ".join(names) if names else "as is"


def greyscale(frames: np.ndarray) -> np.ndarray:
    """Frames (N, H, W, 3) as grey RGB: every channel the BT.601 luma."""
    y = np.clip(np.rint(frames.astype(np.float32) @ YCBCR[0]), 0, 255).astype(np.uint8)
    return np.repeat(y[..., None], 3, axis=-1)


def chroma_level(frames: np.ndarray) -> np.ndarray:
    """Mean |Cb| + |Cr| of each frame (0 for a grey frame), on every other pixel."""
    f = frames[:, ::2, ::2].astype(np.float32)
    chroma = f @ YCBCR[1:].T  # (N, h, w, 2): Cb, Cr
    return np.abs(chroma).sum(axis=-1).mean(axis=(1, 2))


def prepare(frames: np.ndarray, views: ViewSet) -> tuple[np.ndarray, np.ndarray]:
    """Frames with their bars cut (when `views.borders`) and each frame's view bits."""
    bits = np.zeros(len(frames), np.int8)
    if views.borders:
        frames, cut = crop_borders(frames, views.border_rule)
        bits[cut] |= BORDERS_CUT
    return frames, bits


def mark_grey(frames: np.ndarray, bits: np.ndarray, views: ViewSet) -> np.ndarray:
    """A pretraining video's frames' bits with LUMA set on grey frames (they search the luma
    index)."""
    if views.luma and len(frames):
        bits = bits | np.where(chroma_level(frames) <= views.grey_chroma, LUMA, 0).astype(np.int8)
    return bits


def index_views(frames: np.ndarray, bits: np.ndarray, views: ViewSet
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A downstream clip's (prepared) frames as indexed: (frames, view bits) per view."""
    variants = [(frames, bits)]
    if views.flips:
        variants.append((np.ascontiguousarray(frames[:, :, ::-1]), bits | FLIPPED))
    yield from variants
    if views.luma:
        for f, b in variants:
            yield greyscale(f), b | LUMA


def query_views(frames: np.ndarray, times: np.ndarray, bits: np.ndarray, views: ViewSet
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A pretraining video's (prepared) frames as searched: (frames, times, view bits) of the
    frames themselves and of the insets found in them."""
    out = [(frames, times, mark_grey(frames, bits, views))]
    if views.insets and len(frames):
        inner, src = insets(frames, views.inset_rule)
        if len(inner):
            out.append((inner, times[src], mark_grey(inner, bits[src] | INSET, views)))
    return out
