"""Which leak encoder catches which kind of copy: `dct` (weight-free) vs `clip` (CLIP weights).

Every downstream clip of the demo sets (data/downstream manifests, made by `dvc repro
downstream`) is copied with one alteration at a time, the copy is encoded as the dedup stage
encodes a pretraining video, and searched against the index of all downstream clips (their
frames at the stage's crop scales). Per encoder and alteration:
- top1: share of copies whose best match is their own source clip;
- recall_at_threshold: share whose source matches at or above the threshold;
- true_sim: median best similarity to the source; distractor_sim: the 99th percentile of the
  best similarity to any other clip (what the threshold must stay above).

    python bench/dedup_encoders_bench.py [--clip-model PATH_OR_HUB_NAME] [--clip-threshold 0.9]
        [--out bench/results/dedup_encoders.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import numpy as np
import polars as pl
from PIL import Image, ImageEnhance, ImageFilter

from tvts.config import resolve
from tvts.corpus.demo.media import write_video
from tvts.dedup.encoders import build_encoder
from tvts.dedup.frames import centre_crop, clip_times, read_frames_at


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


ALTERATIONS = {
    "identical": lambda f: f,
    "reencode_q40": lambda f: _reencode(f, 40),
    "rescale_0.5": lambda f: _pil_map(f, lambda im: im.resize(
        (im.width // 2, im.height // 2), Image.BILINEAR).resize(im.size, Image.BILINEAR)),
    "crop_0.8": lambda f: _crop(f, 0.8),
    "crop_0.6": lambda f: _crop(f, 0.6),
    "hflip": lambda f: np.ascontiguousarray(f[:, :, ::-1]),
    "brightness_+30%": lambda f: _pil_map(f, lambda im: ImageEnhance.Brightness(im).enhance(1.3)),
    "grayscale": lambda f: _pil_map(f, lambda im: im.convert("L")),
    "blur_r2": lambda f: _pil_map(f, lambda im: im.filter(ImageFilter.GaussianBlur(2))),
    "overlay": _overlay,
}


def encode_index(encoder, clips: list[np.ndarray], scales: list[float]) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    vecs, owner = [], []
    for i, frames in enumerate(clips):
        for s in scales:
            v = encoder.encode(centre_crop(frames, s))
            vecs.append(v)
            owner += [i] * len(v)
    return np.concatenate(vecs), np.array(owner)


def evaluate(encoder, clips, all_frames, scales, threshold) -> dict:
    index, owner = encode_index(encoder, clips, scales)
    n = len(clips)
    out = {}
    for name, alter in ALTERATIONS.items():
        best_true, best_other, top1 = [], [], 0
        for i, frames in enumerate(all_frames):
            q = encoder.encode(alter(frames))
            sims = q @ index.T  # small: one copy against the demo index
            per_clip = np.full(n, -1.0)
            np.maximum.at(per_clip, owner, sims.max(axis=0))
            best_true.append(per_clip[i])
            best_other.append(np.delete(per_clip, i).max())
            top1 += int(per_clip.argmax() == i)
        t, o = np.array(best_true), np.array(best_other)
        out[name] = {"top1": round(top1 / n, 3),
                     "recall_at_threshold": round(float((t >= threshold).mean()), 3),
                     "true_sim": round(float(np.median(t)), 4),
                     "distractor_sim_p99": round(float(np.quantile(o, 0.99)), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifests", default="data/downstream")
    ap.add_argument("--clip-model", default=None)
    ap.add_argument("--clip-threshold", type=float, default=0.9)
    ap.add_argument("--out", default="bench/results/dedup_encoders.json")
    args = ap.parse_args()
    cfg = resolve({}).dedup
    manifest = pl.concat([pl.read_parquet(p) for p in sorted(Path(args.manifests)
                                                              .glob("*.parquet"))
                          if p.name != "quarantine.parquet"])
    # index frames as the stage samples a downstream clip; the copy uses every 3rd frame
    clips, copies = [], []
    for r in manifest.iter_rows(named=True):
        clips.append(read_frames_at(r["uri"], clip_times(r["duration_s"], cfg.frames_per_video),
                                    cfg.decode_size)[0])
        n = max(2, int(r["duration_s"] * 10 / 3))
        copies.append(read_frames_at(r["uri"], clip_times(r["duration_s"], n),
                                     cfg.decode_size)[0])
    result = {"clips": len(clips), "crop_scales": cfg.crop_scales, "encoders": {}}
    encoders = [("dct", build_encoder("dct"), cfg.threshold)]
    if args.clip_model:
        encoders.append((f"clip ({args.clip_model})", build_encoder("clip", args.clip_model),
                         args.clip_threshold))
    for name, enc, thr in encoders:
        result["encoders"][name] = {"threshold": thr,
                                    "alterations": evaluate(enc, clips, copies,
                                                            cfg.crop_scales, thr)}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
