"""The linear probe on cached features at the paper's settings: 100 epochs of SGD (batch 384,
lr 0.1) over 10,000 x 768 features (ViT-B width), 174 classes (SSV2), multi-view test on
2,000 clips x 6 views. Seconds on this machine, and whether it learned (synthetic features
with class structure, so top-1 must be far above chance).

    python bench/linear_probe_bench.py [--out bench/results/linear_probe.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from results_io import machine, write_results

from tvts.eval.probes import ProbeSettings, linear_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=174)
    ap.add_argument("--test", type=int, default=2_000)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", default="bench/results/linear_probe.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
    y = rng.integers(0, args.classes, size=args.n)
    x = centres[y] + 2.0 * rng.normal(size=(args.n, args.dim)).astype(np.float32)
    yt = rng.integers(0, args.classes, size=args.test)
    xt = (centres[yt][:, None] + 2.0 * rng.normal(size=(args.test, args.views, args.dim))
          ).astype(np.float32)
    s = ProbeSettings(epochs=args.epochs, batch_size=384, lr=0.1, momentum=0.9)
    t = time.perf_counter()
    res = linear_probe(x, y, xt, yt, args.classes, s)
    seconds = time.perf_counter() - t
    result = {"machine": machine(torch_threads=torch.get_num_threads()),
              "features": [args.n, args.dim], "classes": args.classes, "epochs": args.epochs,
              "batch_size": 384, "test_clips": args.test, "views": args.views,
              "seconds": round(seconds, 2), "top1": round(res.metrics["top1"], 2),
              "chance_top1": round(100 / args.classes, 2)}
    write_results(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
