"""Throughput of the TVTS sample pipeline against raw decoding of the same frames.

Side by side in one run, on the same clips (same windows and frame indices):
- raw decode (open + decode the chosen frames) vs the full pipeline (windows, TSN, decode,
  crop/normalise, masks, tokenisation in collate), with 0, 1 and 2 loader workers;
- decord vs PyAV;
- peak resident memory per worker;
- the paper profile's input (456x256 H.264, 16 frames, 224 crop) with a 250-frame GOP (as
  YouTube serves) and after `tvts reencode --gop 16`: clips/s per core and the cores one GPU
  needs at 1,500 clips/s;
- decode once, sample many (data.samples_per_decode = 1, 2, 4).

    python bench/loader_bench.py [--clips 24] [--out bench/results/loader.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from results_io import machine, write_results
from torch.utils.data import DataLoader, Dataset

from tvts.config import resolve
from tvts.corpus.demo.generate import generate_demo
from tvts.data.frames import tsn_indices
from tvts.data.tvts_dataset import SampleSpec, TVTSCollate, TVTSDataset, VideoEntry
from tvts.data.windows import draw_windows
from tvts.video.decoders import open_video
from tvts.video.reencode import reencode

GPU_CLIPS_PER_S = 1500  # one H100 at the paper profile (ISSUE: ~285 GFLOP per clip)


def entries_from_demo(pretrain_dir: Path) -> list[VideoEntry]:
    out = []
    for side_path in sorted(pretrain_dir.glob("*.json")):
        side = json.loads(side_path.read_text())
        words = [(w["start_s"], w["word"]) for s in side["segments"] if s["kind"] == "event"
                 for w in s["speech"]["words"]]
        out.append(VideoEntry(side_path.stem, str(side_path.with_suffix(".mp4")),
                              side["duration_s"], np.array([t for t, _ in words]),
                              [w for _, w in words]))
    return out


class RawDecode(Dataset):
    """Opens each clip's video and decodes the same frames the pipeline would: nothing else."""

    def __init__(self, entries: list[VideoEntry], spec: SampleSpec, seed: int):
        self.jobs = []
        for i, e in enumerate(entries):
            rng = np.random.default_rng([seed, 0, i])
            w = draw_windows(rng, e.duration_s, e.times, e.words, spec.num_transcripts,
                             spec.window_s, spec.gap_s, spec.max_tries)
            self.jobs.append((e.uri, *w.span))
        self.spec = spec

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        uri, t0, t1 = self.jobs[i]
        reader = open_video(uri, self.spec.decoder, self.spec.resize_short)
        rng = np.random.default_rng(i)
        idx = np.concatenate([tsn_indices(reader.frame_times, t0, t1, self.spec.num_frames,
                                          True, rng) for _ in range(self.spec.samples_per_decode)])
        frames = reader.get_frames(np.unique(idx))
        return {"frames": torch.from_numpy(frames), "rss_kb": peak_rss_kb()}


class Measured(TVTSDataset):
    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["rss_kb"] = peak_rss_kb()
        return item


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class PipelineCollate(TVTSCollate):
    def __call__(self, items):  # type: ignore[no-untyped-def]
        batch = super().__call__(items)
        batch["rss_kb"] = max(it["rss_kb"] for it in items)
        return batch


def raw_collate(items):  # type: ignore[no-untyped-def]
    return {"clips": len(items), "rss_kb": max(it["rss_kb"] for it in items)}


class Repeat(Dataset):
    """The same clips several times over, so a timed pass is long enough to measure."""

    def __init__(self, base: Dataset, times: int):
        self.base, self.times = base, times

    def __len__(self) -> int:
        return len(self.base) * self.times  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict:
        return self.base[i % len(self.base)]  # type: ignore[arg-type]


def run_loader(ds: Dataset, collate, workers: int, clips_per_item: int) -> dict:  # type: ignore[no-untyped-def]
    """Clips/s over a timed pass, after a warm-up pass (worker start-up, tokenizer load)."""
    ds = Repeat(ds, 3)
    loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    for _ in loader:  # warm-up pass: workers start, tokenizers load
        pass
    t0 = time.perf_counter()
    rss = 0
    for batch in loader:
        rss = max(rss, batch["rss_kb"])
    dt = time.perf_counter() - t0
    return {"clips_per_s": round(len(ds) * clips_per_item / dt, 2), "seconds": round(dt, 2),
            "peak_rss_mb_per_worker": round(rss / 1024, 1)}


def compare(entries, spec, seed, workers_list, tokenizer, max_tokens) -> dict:  # type: ignore[no-untyped-def]
    out = {}
    for workers in workers_list:
        raw = run_loader(RawDecode(entries, spec, seed), raw_collate, workers,
                         spec.samples_per_decode)
        full = run_loader(Measured(entries, spec, seed), PipelineCollate(tokenizer, max_tokens),
                          workers, spec.samples_per_decode)
        out[f"workers_{workers}"] = {"raw_decode": raw, "pipeline": full, "pipeline_over_raw":
                                     round(full["clips_per_s"] / raw["clips_per_s"], 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--paper-clips", type=int, default=12)
    ap.add_argument("--out", default="bench/results/loader.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    demo = resolve({})
    tmp = Path(tempfile.mkdtemp(prefix="tvts-loader-bench-"))
    results: dict = {"machine": machine()}
    try:
        # --- demo profile: the embedded corpus as generated
        cfg = demo.corpus.demo.model_copy(update={"num_videos": args.clips, "leak_fraction": 0.0,
                                                   "downstream": demo.corpus.demo.downstream})
        gen = generate_demo(cfg, 0, tmp / "demo", workers=2)
        entries = entries_from_demo(gen.pretrain_dir)
        spec = SampleSpec.from_params(demo)
        tok, max_tok = demo.model.text.name, demo.data.max_text_tokens
        results["demo_profile"] = {}
        for backend in ("decord", "pyav"):
            results["demo_profile"][backend] = compare(entries, replace(spec, decoder=backend), 0,
                                                       (0, 1, 2), tok, max_tok)
            print("demo", backend, results["demo_profile"][backend], flush=True)

        # --- paper profile input: 456x256, 25 fps, GOP 250 (before) vs GOP 16 (after)
        paper = resolve({"profile": "paper"})
        pcfg = demo.corpus.demo.model_copy(update={
            "num_videos": args.paper_clips, "width": 456, "height": 256, "fps": 25,
            "duration_s": 30.0, "leak_fraction": 0.0})
        pgen = generate_demo(pcfg, 1, tmp / "paper", workers=2)
        long_gop, short_gop = tmp / "gop250", tmp / "gop16"
        long_gop.mkdir()
        short_gop.mkdir()
        for src in sorted(pgen.pretrain_dir.glob("*.mp4")):
            reencode(src, long_gop / src.name, short_side=None, gop=250)
            shutil.copy(src.with_suffix(".json"), long_gop / src.with_suffix(".json").name)
            reencode(src, short_gop / src.name, short_side=256, gop=16)
            shutil.copy(src.with_suffix(".json"), short_gop / src.with_suffix(".json").name)
        pspec = SampleSpec.from_params(paper)
        results["paper_input"] = {}
        for name, folder in (("gop250", long_gop), ("gop16_reencoded", short_gop)):
            ents = entries_from_demo(folder)
            row = {}
            for backend in ("decord", "pyav"):
                # tokeniser: the bundled MiniLM (the paper's DistilBERT is not offline here)
                r = compare(ents, replace(pspec, decoder=backend), 0, (0,), tok, 50)["workers_0"]
                per_core = r["pipeline"]["clips_per_s"]
                row[backend] = {**r, "clips_per_s_per_core": per_core,
                                "cores_per_gpu_at_1500_clips_s": round(GPU_CLIPS_PER_S / per_core)}
            results["paper_input"][name] = row
            print("paper", name, row, flush=True)
        # decode once, sample many (short GOP, decord)
        ents = entries_from_demo(short_gop)
        rep = {}
        for r_ in (1, 2, 4):
            res = compare(ents, replace(pspec, decoder="decord", samples_per_decode=r_), 0, (0,),
                          tok, 50)["workers_0"]["pipeline"]
            rep[f"samples_per_decode_{r_}"] = {
                **res, "cores_per_gpu_at_1500_clips_s": round(GPU_CLIPS_PER_S / res["clips_per_s"])}
        results["paper_input"]["repeated_sampling_gop16_decord"] = rep
        print("repeated", rep, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
