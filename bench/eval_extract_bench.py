"""Feature extraction of the `evaluate` stage against the loader's raw decoding of the same
clips, side by side in one run: clips/s of each and their ratio (target >= 0.8 on a CPU), with
one encoder and with the stage's three (pretrain, post_pretrain, random: one decode for all),
and the encoder alone on clips already in memory (what bounds extraction when decoding is not
the slower part).

    python bench/eval_extract_bench.py [--clips DIR] [--repeat 2] [--workers 2]
        [--out bench/results/eval_extract.json]

Clips: the demo's SSV2-format clips (`data/corpus/demo/downstream/ssv2/videos`, made by
`dvc repro corpus`); demo-profile encoder (ViT 192 wide, 4 blocks, 8 x 64 px), 2 x 3 views.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from results_io import machine, write_results
from torch.utils.data import DataLoader

from tvts.config import resolve
from tvts.data.labelled import LabelledClips, LabelledItem
from tvts.eval.features import ClipItem, FrozenEncoder, ViewSpec, extract, weights_fingerprint
from tvts.models.factory import video_config
from tvts.models.video_vit import VideoViT


def decode_only(paths: list[Path], spec: ViewSpec, batch: int, workers: int) -> float:
    data = LabelledClips([LabelledItem(p.stem, str(p), -1) for p in paths], spec.frames,
                         spec.frame_size, spec.resize_short, spec.decoder, train=False,
                         temporal_views=spec.temporal, spatial_views=spec.spatial)
    loader = DataLoader(data, batch_size=batch, num_workers=workers, collate_fn=list)
    t = time.perf_counter()
    n = sum(len(b) for b in loader)
    return n / (time.perf_counter() - t)


def encoders(params, n: int) -> list[FrozenEncoder]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        torch.manual_seed(i)
        vit = VideoViT(video_config(params))
        proj = torch.nn.Linear(vit.cfg.width, params.model.embed_dim)
        out.append(FrozenEncoder(f"e{i}", vit, proj, weights_fingerprint(vit, proj)))
    return out


@torch.inference_mode()
def encode_only(encs: list[FrozenEncoder], spec: ViewSpec, clips: int, batch: int) -> float:
    """Clips/s of the encoders alone: `batch` clips x views per pass, no decoding."""
    x = torch.randn(batch * spec.views, 3, spec.frames, spec.frame_size, spec.frame_size)
    for e in encs:
        e.encode(x, spec.token_grid)
    t = time.perf_counter()
    done = 0
    while done < clips:
        for e in encs:
            e.encode(x, spec.token_grid)
        done += batch
    return done / (time.perf_counter() - t)


def extraction(paths: list[Path], encs: list[FrozenEncoder], spec: ViewSpec, batch: int,
               workers: int) -> float:
    items = [ClipItem(p.stem, str(p)) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = extract(items, encs, spec, tmp, num_shards=8, batch_size=batch, workers=workers)
        return res.clips_decoded / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default="data/corpus/demo/downstream/ssv2/videos")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the clips, alternating")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="bench/results/eval_extract.json")
    args = ap.parse_args()
    params = resolve({})
    d = params.data
    tv, sv = params.evaluate.test_views
    spec = ViewSpec(d.num_frames, d.frame_size, d.resize_short, d.decoder, tv, sv,
                    params.evaluate.token_grid)
    paths = sorted(Path(args.clips).glob("*.webm"))
    if not paths:
        raise SystemExit(f"no clips in {args.clips}: run `dvc repro corpus` first")
    one, three = encoders(params, 1), encoders(params, 3)
    runs: dict[str, list[float]] = {"decode": [], "encode_only_1_encoder": [],
                                    "extract_1_encoder": [], "extract_3_encoders": []}
    decode_only(paths[:4], spec, args.batch, args.workers)  # warm the file cache
    for _ in range(args.repeat):
        runs["decode"].append(decode_only(paths, spec, args.batch, args.workers))
        runs["encode_only_1_encoder"].append(encode_only(one, spec, len(paths), args.batch))
        runs["extract_1_encoder"].append(extraction(paths, one, spec, args.batch, args.workers))
        runs["extract_3_encoders"].append(extraction(paths, three, spec, args.batch,
                                                     args.workers))
    best = {k: max(v) for k, v in runs.items()}
    result = {
        "machine": machine(device="cpu"),
        "clips": len(paths), "views": f"{tv}x{sv}", "frames": d.num_frames,
        "frame_size": d.frame_size, "decoder": d.decoder, "loader_workers": args.workers,
        "clips_per_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "best_clips_per_s": {k: round(v, 2) for k, v in best.items()},
        "ratio_extract_1_over_decode": round(best["extract_1_encoder"] / best["decode"], 3),
        "ratio_extract_3_over_decode": round(best["extract_3_encoders"] / best["decode"], 3),
        "ratio_extract_1_over_encode_only": round(best["extract_1_encoder"]
                                                  / best["encode_only_1_encoder"], 3),
        "target_ratio": 0.8,
    }
    write_results(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
