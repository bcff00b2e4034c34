"""Letterbox / pillarbox bars: find them per frame and describe only the picture inside.

A re-release of a clip often pads it to another aspect ratio (black bars above and below, or
left and right, sometimes both, sometimes a plain grey or white pad) and may squeeze the picture
to fit. Once the bars are cut and the picture is resized back to the frame's size, an aspect
change is only a rescale, which the descriptors tolerate. Detection is per frame, so a cut to a
bordered shot inside a clip is handled too.

A bar is a run of rows (or columns) from an edge in which nearly every pixel (`coverage`) is
dark (luma <= `max_luma`), or, for a pad of another colour, within `tolerance` of one colour
that the opposite edge's bar has as well, about as wide (a pad is centred; dark bars need not
be: an inset in a corner of a black frame). A bar ends at a sharp edge: in one of the two
lines after it, at least `edge` of the pixels are unlike the bar (half after a dark bar, three
quarters after a pad of another colour). A flat background that a shape enters gradually (the
demo's clips, a dark sky) is therefore picture, not a bar. A bar thinner than `min_fraction`
of the side is ignored (an encoder's dark edge line); when the bars would leave less than
`min_content` of a side, nothing is cut (a dark or blank frame is itself the picture).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tvts.dedup import LUMA


@dataclass(frozen=True)
class BorderRule:
    max_luma: float = 32.0
    tolerance: float = 12.0
    coverage: float = 0.98
    edge: float = 0.5  # after a dark bar (an inset in a black frame fills only part of it)
    pad_edge: float = 0.75  # after a pad of another colour
    min_fraction: float = 0.02
    min_content: float = 0.3


DEFAULT_RULE = BorderRule()


@dataclass(frozen=True)
class Box:
    """The picture's rows [top, bottom) and columns [left, right)."""

    top: int
    bottom: int
    left: int
    right: int

    def is_whole(self, height: int, width: int) -> bool:
        return (self.top, self.bottom, self.left, self.right) == (0, height, 0, width)


def _run_from_edge(flags: np.ndarray) -> int:
    """Length of the run of True at the start of `flags`."""
    off = np.flatnonzero(~flags)
    return int(off[0]) if off.size else len(flags)


def _sharp(like: np.ndarray, run: int, edge: float) -> int:
    """`run` if one of the two lines after it has at least `edge` of its pixels unlike the bar,
    else 0. `like`: per line, the share of its pixels that look like the bar."""
    after = like[run:run + 2]
    return run if after.size and (1.0 - after.min()) >= edge else 0


def _bars(like: np.ndarray, rule: BorderRule, edge: float) -> tuple[int, int]:
    """Bar widths at both ends of the lines whose bar-like share is `like`."""
    bar = like >= rule.coverage
    start, end = _run_from_edge(bar), _run_from_edge(bar[::-1])
    if start == len(like):
        return 0, 0
    return _sharp(like, start, edge), _sharp(like[::-1], end, edge)


def _uniform(line: np.ndarray, colour: np.ndarray, rule: BorderRule) -> bool:
    return bool((np.abs(line - colour).max(axis=-1) <= rule.tolerance).mean() >= rule.coverage)


def _side_pair(frame: np.ndarray, luma: np.ndarray, axis: int, rule: BorderRule
               ) -> tuple[int, int]:
    """Bar widths at the start and the end of the rows (axis=1) or columns (axis=0)."""
    n = frame.shape[1 - axis]  # lines along this direction
    least = max(1, round(rule.min_fraction * n))
    start, end = _bars((luma <= rule.max_luma).mean(axis=axis), rule, rule.edge)
    if start == 0 and end == 0:
        # a pad of one non-dark colour, the same at both edges
        first = (frame[0] if axis == 1 else frame[:, 0]).astype(np.float32)
        last = (frame[-1] if axis == 1 else frame[:, -1]).astype(np.float32)
        c0, c1 = first.mean(axis=0), last.mean(axis=0)  # uniform lines: mean = median
        if np.abs(c0 - c1).max() <= rule.tolerance and _uniform(first, c0, rule) \
                and _uniform(last, c1, rule):
            near = np.abs(frame.astype(np.float32) - (c0 + c1) / 2).max(axis=-1) \
                <= rule.tolerance
            s, e = _bars(near.mean(axis=axis), rule, rule.pad_edge)
            if min(s, e) >= least and abs(s - e) <= max(2, rule.min_fraction * n):
                start, end = s, e
    start = start if start >= least else 0
    end = end if end >= least else 0
    if n - start - end < rule.min_content * n:
        return 0, 0
    return start, end


def content_box(frame: np.ndarray, rule: BorderRule = DEFAULT_RULE,
                luma: np.ndarray | None = None) -> Box:
    """The picture inside the bars of one uint8 RGB frame (H, W, 3); `luma`: its BT.601 luma
    when already computed."""
    h, w = frame.shape[:2]
    luma = frame.astype(np.float32) @ LUMA if luma is None else luma
    top, bottom = _side_pair(frame, luma, 1, rule)
    left, right = _side_pair(frame, luma, 0, rule)
    return Box(top, h - bottom, left, w - right)


def crop_borders(frames: np.ndarray, rule: BorderRule = DEFAULT_RULE
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's picture, resized back to the frames' size (N, H, W, 3), and which frames
    had bars cut (bool (N,))."""
    if len(frames) == 0:
        return frames, np.zeros(0, bool)
    h, w = frames.shape[1:3]
    out = frames
    cut = np.zeros(len(frames), bool)
    luma = frames.astype(np.float32) @ LUMA  # (N, H, W), once for all frames
    for i, frame in enumerate(frames):
        box = content_box(frame, rule, luma[i])
        if box.is_whole(h, w):
            continue
        if not cut.any():
            out = frames.copy()
        cut[i] = True
        out[i] = crop_resized(frame, box)
    return out, cut


def crop_resized(frame: np.ndarray, box: Box) -> np.ndarray:
    """The box of the frame resized (antialiased) back to the frame's size."""
    h, w = frame.shape[:2]
    pic = torch.from_numpy(np.ascontiguousarray(
        frame[box.top:box.bottom, box.left:box.right])).permute(2, 0, 1)[None].float()
    pic = F.interpolate(pic, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return pic[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def insets(frames: np.ndarray, rule: InsetRule | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The picture-in-picture insets found in `frames`, each resized to the frames' size, and
    the index of the frame each comes from."""
    found = [(i, box) for i, f in enumerate(frames)
             if (box := inset_box(f, rule or DEFAULT_INSET)) is not None]
    if not found:
        return frames[:0], np.zeros(0, np.int64)
    return (np.stack([crop_resized(frames[i], box) for i, box in found]),
            np.array([i for i, _ in found]))


@dataclass(frozen=True)
class InsetRule:
    """A picture-in-picture inset: a rectangle whose sides are long straight edges (a change
    of at least `step` in some colour channel across the side, along at least `straight` of
    it), covering between `min_side` and `max_side` of each side of the frame."""

    # measured on the encoders bench's 764 pip-over-video frames: 97% of the insets found to
    # within 2 px, while 16% of plain demo frames show one (the same share as at 12 / 0.85,
    # which found 89%)
    step: float = 8.0
    straight: float = 0.75
    min_side: float = 0.35
    max_side: float = 0.92


DEFAULT_INSET = InsetRule()


def _candidates(share: np.ndarray, least: float, keep: int) -> list[int]:
    """Up to `keep` lines whose stepping share is at least `least`, the strongest first."""
    idx = np.flatnonzero(share >= least)
    return sorted(idx[np.argsort(-share[idx], kind="stable")][:keep].tolist())


def inset_box(frame: np.ndarray, rule: InsetRule = DEFAULT_INSET, stride: int = 2
              ) -> Box | None:
    """The rectangle inside the frame bounded on every side by a straight edge or the frame's
    own edge, of inset size and not the whole frame, with the most sides that are edges (then
    the largest); None when there is none. Each side is checked along the span the rectangle
    gives it, so a shape's edge inside the picture does not count unless it runs the inset's
    full length. Found on every `stride`-th pixel (edges survive; the cost drops 4x)."""
    small = frame[::stride, ::stride].astype(np.int16)
    h, w = small.shape[:2]
    # the largest step of any channel: two pictures of equal brightness differ in colour
    dy = np.abs(np.diff(small, axis=0)).max(axis=-1)  # (h-1, w): between rows r and r+1
    dx = np.abs(np.diff(small, axis=1)).max(axis=-1)  # (h, w-1)
    least = rule.straight * rule.min_side
    rows = _candidates((dy >= rule.step).mean(axis=1), least, 8)
    cols = _candidates((dx >= rule.step).mean(axis=0), least, 8)
    if not rows and not cols:
        return None
    tops, bottoms = [0, *(r + 1 for r in rows)], [*(r + 1 for r in rows), h]
    lefts, rights = [0, *(c + 1 for c in cols)], [*(c + 1 for c in cols), w]

    def fits(a: int, b: int, n: int) -> bool:
        return rule.min_side * n <= b - a <= rule.max_side * n or (a, b) == (0, n)

    best, best_rank = None, (0, 0)
    for t in tops:
        for b in bottoms:
            if not fits(t, b, h):
                continue
            for left in lefts:
                for r in rights:
                    if (t, b, left, r) == (0, h, 0, w) or not fits(left, r, w):
                        continue
                    sides = (t > 0) + (b < h) + (left > 0) + (r < w)
                    rank = (sides, (b - t) * (r - left))
                    if rank > best_rank and _bounded(dy, dx, t, b, left, r, h, w, rule):
                        best, best_rank = (t, b, left, r), rank
    if best is None:
        return None
    return _refined(frame, *(v * stride for v in best), stride)


def _refined(frame: np.ndarray, t: int, b: int, left: int, r: int, reach: int) -> Box:
    """The box's inner sides moved (within `reach` pixels) to the full-resolution line with
    the largest mean step: a box found on every other pixel is off by up to two."""
    h, w = frame.shape[:2]
    f = frame.astype(np.int16)
    b, r = min(b, h), min(w, r)

    def best_line(pos: int, n: int, step) -> int:
        if pos in (0, n):
            return pos
        cands = list(range(max(1, pos - reach), min(n - 1, pos + reach) + 1))
        return max(cands, key=lambda p: (step(p), -abs(p - pos)))

    def row_step(p: int) -> float:  # step between rows p-1 and p, along the box's width
        return float(np.abs(f[p] - f[p - 1]).max(axis=-1)[left:r].mean())

    def col_step(p: int) -> float:
        return float(np.abs(f[:, p] - f[:, p - 1]).max(axis=-1)[t:b].mean())

    t2, b2 = best_line(t, h, row_step), best_line(b, h, row_step)
    l2, r2 = best_line(left, w, col_step), best_line(r, w, col_step)
    return Box(t2, b2, l2, r2)


def _bounded(dy: np.ndarray, dx: np.ndarray, t: int, b: int, left: int, r: int, h: int,
             w: int, rule: InsetRule) -> bool:
    """Every side of [t, b) x [left, r) is the frame's edge or a straight step along it."""
    def steps(line: np.ndarray) -> bool:
        return line.size > 0 and float((line >= rule.step).mean()) >= rule.straight

    return ((t == 0 or steps(dy[t - 1, left:r])) and (b == h or steps(dy[b - 1, left:r]))
            and (left == 0 or steps(dx[t:b, left - 1])) and (r == w or steps(dx[t:b, r - 1])))
