"""One training step of the paper profile on a GPU: clips/s, GFLOP per clip, peak memory.

ViT-B/16 (16 frames, 224 px, 75% of the patches dropped: 393 tokens), a DistilBERT-sized
text encoder (random weights, same classes, loaded from a folder as users' weights are), the
2-block sort transformer, K = 4 transcripts of 50 tokens; AdamW, bf16 autocast. Variants:
masking 0.75 vs none, activation checkpointing. Needs torch, timm, transformers, safetensors.

    python bench/gpu_step_bench.py [--out bench/results/gpu_step.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from results_io import write_results
from torch.utils.flop_counter import FlopCounterMode

from tvts.models.sorter import SortTransformer
from tvts.models.text_encoder import TextEncoder
from tvts.models.tvts_model import ObjectiveConfig, TVTSModel
from tvts.models.video_vit import VideoViT, VideoViTConfig, sample_keep


def build(text_dir: str, checkpointing: bool) -> TVTSModel:
    video = VideoViT(VideoViTConfig(), grad_checkpointing=checkpointing)
    text = TextEncoder(text_dir)
    sorter = SortTransformer(768, 12, 2, 4, "kway", text.dim)
    return TVTSModel(video, text, sorter, 256, ObjectiveConfig())


def batch(b: int, mask_ratio: float, device: str) -> tuple:
    video = torch.randn(b, 3, 16, 224, 224, device=device)
    keep = torch.stack([sample_keep(8, 196, mask_ratio) for _ in range(b)]).to(device)
    ids = torch.randint(1000, 30000, (b, 4, 50), device=device)
    mask = torch.ones_like(ids)
    order = torch.stack([torch.randperm(4) for _ in range(b)]).to(device)
    return video, ids, mask, order, keep


def run(model: TVTSModel, b: int, mask_ratio: float, steps: int = 8) -> dict:
    device = "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = batch(b, mask_ratio, device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(*inputs)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(*inputs)
        out["loss"].backward()
    opt.zero_grad(set_to_none=True)
    gflop = counter.get_total_flops() / b / 1e9
    return {"batch": b, "mask_ratio": mask_ratio, "step_s": round(dt, 4),
            "clips_per_s": round(b / dt, 1), "gflop_per_clip_fwd_bwd": round(gflop, 1),
            "achieved_tflops": round(gflop * b / dt / 1e3, 1),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/gpu_step.json")
    args = ap.parse_args()
    from transformers import DistilBertConfig, DistilBertModel

    torch.backends.cuda.matmul.allow_tf32 = True
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        DistilBertModel(DistilBertConfig()).save_pretrained(tmp)  # distilbert-base sizes
        for checkpointing, b, ratio in [(False, 64, 0.75), (False, 64, 0.0), (True, 64, 0.75),
                                        (False, 128, 0.75)]:
            model = build(tmp, checkpointing).cuda()
            r = run(model, b, ratio)
            r["grad_checkpointing"] = checkpointing
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
            del model
            torch.cuda.empty_cache()
    write_results(args.out, results)


if __name__ == "__main__":
    main()
