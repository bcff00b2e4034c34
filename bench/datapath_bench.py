"""The data path at the paper's input: packed JPEG shards against decoding H.264 on the fly.

One run, the same corpus and sample spec (paper profile: 16 frames, 224 crop of 268 px short
side, K = 4 windows of 3-5 s), clips/s of the whole sample pipeline (windows, TSN, frames,
crop, masks, tokenisation) in ONE process with one thread = per CPU core:
- on the fly: decord and PyAV on 456x256 25 fps H.264 with a 250-frame GOP (as YouTube
  serves it) and after `tvts reencode --gop 16`; torchcodec's CPU decoder on the same frames
  (raw decoding only: what a user would pick instead), when its FFmpeg libraries load;
- packed (the `pack` stage's shards, paper settings: 4 fps, q90, 4:2:0): JPEGs decoded in the
  loader (libjpeg-turbo), and the `device` mode's loader work (reading and checking bytes)
  with the batched decode on this machine's device timed apart;
- on a GPU, when there is one: nvJPEG batch decode + crop (clips/s), torchcodec NVDEC.
Also: the pack throughput (video-hours per core-hour, one worker), the storage cost per
video-hour, and the CPU cores one GPU needs on each path at the step's clips/s
(bench/results/gpu_step.json, H200).

    python bench/datapath_bench.py [--videos 12] [--out bench/results/datapath.json]
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
from loader_bench import entries_from_demo
from results_io import cpu_name, write_results
from torch.utils.data import DataLoader

from tvts.config import S3Config, resolve
from tvts.corpus.demo.generate import generate_demo
from tvts.data.frames import tsn_indices
from tvts.data.transforms import batch_to
from tvts.data.tvts_dataset import SampleSpec, TVTSCollate, TVTSDataset
from tvts.data.windows import draw_windows
from tvts.pack.corpus_run import pack_corpus, plan, settings_for, to_tables
from tvts.tables import frame
from tvts.video.packed import PackedIndex
from tvts.video.reencode import reencode

GPU_STEP = Path("bench/results/gpu_step.json")


def videos_table(entries) -> object:  # type: ignore[no-untyped-def]
    return frame([{"video_id": e.video_id, "uri": e.uri, "duration_s": e.duration_s,
                   "fps": 25.0, "width": None, "height": None, "has_audio": True,
                   "source": "bench", "split": "train"} for e in entries], "videos")


def pipeline_rate(ds: TVTSDataset, collate: TVTSCollate, min_s: float, device=None) -> dict:  # type: ignore[no-untyped-def]
    """Clips/s in this process over passes through the clips until `min_s` seconds are spent
    (after a warm-up pass); with `device`, each batch is also moved there (its JPEGs decoded
    there), timed apart."""
    def batches():  # type: ignore[no-untyped-def]
        return DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate)

    for _ in batches():
        pass  # tokenizer load, page cache
    clips, host, dev = 0, 0.0, 0.0
    while host + dev < min_s:
        t0 = time.perf_counter()
        for batch in batches():
            t1 = time.perf_counter()
            host += t1 - t0
            if device is not None:
                out = batch_to(batch, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                clips += len(out["video"])
            else:
                clips += len(batch["video"])
            t0 = time.perf_counter()
            dev += t0 - t1
    r = {"clips": clips, "host_s": round(host, 3), "clips_per_s_host": round(clips / host, 2)}
    if device is not None:
        r |= {"device": str(device), "device_s": round(dev, 3),
              "clips_per_s_device_decode": round(clips / dev, 2)}
    return r


def torchcodec_rate(entries, spec: SampleSpec, device: str, min_s: float) -> dict:  # type: ignore[no-untyped-def]
    """torchcodec decoding the frames TSN picks (raw decoding, no crop or text)."""
    try:
        from torchcodec.decoders import VideoDecoder

        VideoDecoder(entries[0].uri, device=device)
    except Exception as e:  # missing FFmpeg libraries, no CUDA build
        return {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    jobs = []
    for i, e in enumerate(entries):
        rng = np.random.default_rng([0, 0, i])
        w = draw_windows(rng, e.duration_s, e.times, e.words, spec.num_transcripts,
                         spec.window_s, spec.gap_s, spec.max_tries)
        jobs.append((e.uri, *w.span))
    clips = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        for i, (uri, a, b) in enumerate(jobs):
            dec = VideoDecoder(uri, device=device, seek_mode="exact")
            times = np.arange(dec.metadata.num_frames) / dec.metadata.average_fps
            idx = tsn_indices(times, a, b, spec.num_frames, True, np.random.default_rng(i))
            dec.get_frames_at(indices=[int(x) for x in idx])
            clips += 1
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"clips": clips, "seconds": round(dt, 3), "clips_per_s": round(clips / dt, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--min-seconds", type=float, default=4.0,
                    help="timed passes through the clips per path until this much time")
    ap.add_argument("--out", default="bench/results/datapath.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    demo, paper = resolve({}), resolve({"profile": "paper"})
    cuda = torch.cuda.is_available()
    tmp = Path(tempfile.mkdtemp(prefix="tvts-datapath-"))
    results: dict = {"machine": {"cpu": cpu_name(),
                                 "gpu": torch.cuda.get_device_name() if cuda else None},
                     "measure": "one process, one thread: clips/s per CPU core"}
    try:
        # the loader bench's paper input: 456x256, 25 fps, 30 s, long and short GOP
        cfg = demo.corpus.demo.model_copy(update={
            "num_videos": args.videos, "width": 456, "height": 256, "fps": 25,
            "duration_s": 30.0, "leak_fraction": 0.0})
        gen = generate_demo(cfg, 1, tmp / "src", workers=2)
        folders = {"gop250": tmp / "gop250", "gop16": tmp / "gop16"}
        for name, folder in folders.items():
            folder.mkdir()
            for src in sorted(gen.pretrain_dir.glob("*.mp4")):
                reencode(src, folder / src.name, short_side=None,
                         gop=250 if name == "gop250" else 16)
                shutil.copy(src.with_suffix(".json"), folder / src.with_suffix(".json").name)
        entries = entries_from_demo(folders["gop250"])
        spec = SampleSpec.from_params(paper)
        # the bundled MiniLM tokenizer (DistilBERT's is not offline here), 50 tokens as paper
        collate = TVTSCollate(demo.model.text.name, paper.data.max_text_tokens)

        # --- pack (paper settings), one worker
        settings = settings_for(paper.pack, paper.data.resize_short, paper.data.decoder)
        shards = tmp / "shards"
        t0 = time.perf_counter()
        jobs = plan(videos_table(entries), paper.pack.model_copy(update={"num_shards": 2}),
                    settings, shards, S3Config(), str(tmp / "cache"))
        index, _, pack_metrics = to_tables(pack_corpus(jobs, 1), 1)
        pack_s = time.perf_counter() - t0
        results["pack"] = {
            "settings": {"fps": settings.fps, "jpeg_quality": settings.jpeg_quality,
                         "chroma": settings.chroma, "short_side": settings.short_side},
            "source": "456x256 25 fps H.264, GOP 250", "videos": len(entries),
            "video_hours": pack_metrics["video_hours"], "seconds": round(pack_s, 2),
            "video_hours_per_core_hour": round(pack_metrics["video_hours"] / (pack_s / 3600),
                                               1),
            "gb_per_video_hour": pack_metrics["gb_per_video_hour"],
            "jpeg_kb_per_frame": round(pack_metrics["jpeg_bytes"] / pack_metrics["frames"] / 1e3,
                                       2),
            "tar_overhead": round(pack_metrics["shard_bytes"] / pack_metrics["jpeg_bytes"] - 1,
                                  4),
        }
        print("pack", results["pack"], flush=True)
        packed = PackedIndex(index, str(shards))

        # --- clips/s per core, same clips
        paths: dict = {}
        for gop, folder in folders.items():
            ents = entries_from_demo(folder)
            for backend in ("decord", "pyav"):
                ds = TVTSDataset(ents, replace(spec, decoder=backend), seed=0)
                paths[f"on_the_fly_{backend}_{gop}"] = pipeline_rate(ds, collate, args.min_seconds)
                print(backend, gop, paths[f"on_the_fly_{backend}_{gop}"], flush=True)
        paths["torchcodec_cpu_gop250_raw_decode"] = torchcodec_rate(entries, spec, "cpu",
                                                                   args.min_seconds)
        paths["packed_loader_decode"] = pipeline_rate(
            TVTSDataset(entries, spec, seed=0, packed=packed), collate, args.min_seconds)
        # the loader side of `pack.decode: device` (bytes read and checked), and apart what
        # `batch_to` then does on the device (decode, crop, normalise): here on the CPU
        paths["packed_device_decode_cpu"] = pipeline_rate(
            TVTSDataset(entries, spec, seed=0, packed=packed, device_decode=True), collate,
            args.min_seconds, torch.device("cpu"))
        if cuda:
            paths["packed_device_decode_cuda"] = pipeline_rate(
                TVTSDataset(entries, spec, seed=0, packed=packed, device_decode=True), collate,
                args.min_seconds, torch.device("cuda"))
            paths["torchcodec_cuda_gop250_raw_decode"] = torchcodec_rate(entries, spec, "cuda",
                                                                        args.min_seconds)
        results["clips_per_s_per_core"] = paths
        print("paths", paths, flush=True)

        # --- ratios and cores per GPU
        base = paths["on_the_fly_decord_gop250"]["clips_per_s_host"]
        packed_cpu = paths["packed_loader_decode"]["clips_per_s_host"]
        worker_only = paths["packed_device_decode_cpu"]["clips_per_s_host"]
        results["packed_over_on_the_fly"] = {
            "decord_gop250": round(packed_cpu / base, 2),
            "pyav_gop250": round(packed_cpu / paths["on_the_fly_pyav_gop250"]["clips_per_s_host"],
                                 2),
            "decord_gop16": round(packed_cpu / paths["on_the_fly_decord_gop16"]["clips_per_s_host"],
                                  2),
            "target": 5.0,
        }
        step = json.loads(GPU_STEP.read_text()) if GPU_STEP.exists() else None
        if step:
            rates = {"today": max(r["clips_per_s"] for r in step["runs"]
                                  if r["mask_ratio"] == 0.75 and not r["grad_checkpointing"]),
                     "tuned_target": 1200.0}
            results["cores_per_gpu"] = {
                "gpu": step["device"], "step_clips_per_s": rates,
                "paths": {name: {k: round(v / r, 1) for k, v in rates.items()} for name, r in (
                    ("on_the_fly_decord_gop250", base),
                    ("on_the_fly_decord_gop16", paths["on_the_fly_decord_gop16"]
                     ["clips_per_s_host"]),
                    ("packed_loader_decode", packed_cpu),
                    ("packed_device_decode (loader side)", worker_only))},
                "budget": 16}
        print(json.dumps(results.get("packed_over_on_the_fly")),
              json.dumps(results.get("cores_per_gpu")), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
