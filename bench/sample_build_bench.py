"""Cost of building one TVTS training sample on the demo profile, side by side in one run:
the reader probing each video's size (decord opens the file and decodes a frame for it) vs
taking the size from the videos table, and the uint8 crop copied by torch vs by numpy.

    python bench/sample_build_bench.py [--videos 16] [--rounds 4]
        [--out bench/results/sample_build.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from loader_bench import entries_from_demo  # bench/ is the script's directory
from results_io import machine, write_results

from tvts.config import resolve
from tvts.corpus.demo.generate import generate_demo
from tvts.data.transforms import crop_box, crop_clip
from tvts.data.tvts_dataset import SampleSpec, build_samples, split_feasible
from tvts.data.windows import NoValidSample


def per_sample_ms(entries, spec, rounds: int) -> float:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    built = 0
    for _ in range(rounds):
        for e in entries:
            try:
                build_samples(e, spec, rng)
                built += 1
            except NoValidSample:  # windows redrawn out; the stage draws another video
                continue
    return 1000 * (time.perf_counter() - t) / max(built, 1)


def torch_crop(frames: np.ndarray, size: int) -> torch.Tensor:
    """The former crop: torch's permute().contiguous() on uint8."""
    top, left = crop_box(frames.shape[1], frames.shape[2], size, False)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + size, left:left + size]))
    return x.permute(3, 0, 1, 2).contiguous()


def crop_ms(frames: np.ndarray, size: int, fn, n: int = 200) -> float:  # type: ignore[no-untyped-def]
    fn(frames, size)
    t = time.perf_counter()
    for _ in range(n):
        fn(frames, size)
    return 1000 * (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default="bench/results/sample_build.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as in a loader worker
    params = resolve({})
    tmp = Path(tempfile.mkdtemp(prefix="tvts-sample-bench-"))
    try:
        cfg = params.corpus.demo.model_copy(update={"num_videos": args.videos,
                                                    "leak_fraction": 0.0})
        gen = generate_demo(cfg, 0, tmp / "demo", workers=2)
        spec = SampleSpec.from_params(params)
        probed = split_feasible(entries_from_demo(gen.pretrain_dir), spec)[0]
        known = [replace(e, size=(cfg.width, cfg.height)) for e in probed]
        rows: dict = {"machine": machine(), "videos": args.videos,
                      "decoder": spec.decoder}
        # alternate, so both see the same machine load
        probe_ms, known_ms = [], []
        for _ in range(2):
            probe_ms.append(per_sample_ms(probed, spec, args.rounds))
            known_ms.append(per_sample_ms(known, spec, args.rounds))
        rows["sample_ms_probing_size"] = round(min(probe_ms), 2)
        rows["sample_ms_size_from_table"] = round(min(known_ms), 2)
        rows["probe_over_table"] = round(min(probe_ms) / min(known_ms), 2)
        frames = np.random.default_rng(0).integers(
            0, 256, (spec.num_frames, spec.resize_short, spec.resize_short * 4 // 3, 3), np.uint8)
        t_ms = crop_ms(frames, spec.frame_size, torch_crop)
        n_ms = crop_ms(frames, spec.frame_size, lambda f, s: crop_clip(f, s, False))
        assert torch.equal(torch_crop(frames, spec.frame_size),
                           crop_clip(frames, spec.frame_size, False))
        rows["crop_ms_torch_permute"] = round(t_ms, 3)
        rows["crop_ms_numpy"] = round(n_ms, 3)
        rows["torch_over_numpy"] = round(t_ms / n_ms, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(rows, indent=2))
    write_results(args.out, rows)


if __name__ == "__main__":
    main()
