"""The TVTS training step against the machine's own limit: step time, FLOP utilisation,
memory per sample, for a reference-style configuration beside ours and each lever alone.

A step is what the trainer runs: forward under the run's precision ("auto": bf16 on a GPU and
on a CPU with bf16 instructions, as the trainer), both losses (the pretraining task's own
`loss`), backward, gradient norm, AdamW step. FLOPs are counted by
torch's FlopCounterMode on one forward + backward of the uncompiled model (matrix products,
convolutions and attention; elementwise work is not counted), and utilisation is the achieved
FLOP/s over the dense matmul rate measured in the same process, on the same device and dtype.
Every (configuration, batch) runs in its own process, so peak memory (CUDA's allocator peak,
or the process's peak RSS on a CPU) is that run's alone; the per-sample memory is the slope
between two batches and the rest is the fixed part (weights, gradients, optimiser state).

Profiles: `demo` (the demo defaults, real MiniLM text encoder), `paper` (ViT-B/16, 16 x 224,
75% masking, K = 4, a DistilBERT-sized text encoder with random weights saved and loaded as a
user's would be), `micro` (the tests). Synthetic inputs: random pixels and token ids, and
transcript lengths drawn in the range a 3-5 s (paper) or 3.5 s (demo) window gives, padded to
the longest in the batch as the collate does.

    python bench/train_step.py [--profiles demo paper] [--out bench/results/train_step.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from results_io import cpu_name, write_results

REPO = Path(__file__).resolve().parents[1]

# what each configuration changes from "ours"; "reference" is the authors' release's habits
OURS: dict[str, Any] = {"precision": "auto", "fused_attn": True, "drop_before_embed": True,
                        "ddp": "none", "optimizer": "fused", "ckpt": False, "compile": None,
                        "sdpa": None, "text_cache": True}
CONFIGS: dict[str, dict[str, Any]] = {
    "reference": {"precision": "fp32", "fused_attn": False, "drop_before_embed": False,
                  "ddp": "find_unused", "optimizer": "foreach", "text_cache": False},
    "ours": {},
    # a frozen text encoder's features computed every step (no transcript cache)
    "ours_no_text_cache": {"text_cache": False},
    "ours_foreach_adamw": {"optimizer": "foreach"},
    "ours_drop_after_embed": {"drop_before_embed": False},
    "ours_unfused_attn": {"fused_attn": False},
    "ours_fp32": {"precision": "fp32"},
    "ours_ckpt": {"ckpt": True},
    "ours_compile": {"compile": "default"},
    "ours_compile_blocks": {"compile": "blocks"},
    # GPU only
    "ours_compile_cudagraphs": {"compile": "reduce-overhead"},
    "ours_sdpa_flash": {"sdpa": "flash"},
    "ours_sdpa_efficient": {"sdpa": "efficient"},
    "ours_sdpa_cudnn": {"sdpa": "cudnn"},
}
GPU_ONLY = {"ours_compile_cudagraphs", "ours_sdpa_flash", "ours_sdpa_efficient",
            "ours_sdpa_cudnn"}
BATCHES = {("demo", "cpu"): (16, 32), ("paper", "cpu"): (2, 4), ("micro", "cpu"): (2, 4),
           ("demo", "cuda"): (64, 128), ("paper", "cuda"): (64, 128),
           ("micro", "cuda"): (16, 32)}
# left out by default where a run costs minutes on a 2-core CPU and tells nothing new
SKIP = {("paper", "cpu"): {"ours_compile_blocks"}}
TEXT_TOKENS = {"demo": (8, 16), "paper": (12, 24), "micro": (6, 10)}  # per transcript, range
GIB = 2**30


# ------------------------------------------------------------------ one run (a child process)
def _params(profile: str, text_dir: str | None) -> Any:
    from tvts.config import resolve

    raw: dict[str, Any] = {"profile": profile}
    if profile == "paper":
        raw["model"] = {"video": {"init": "scratch"}, "text": {"name": text_dir}}
    return resolve(raw, world_size=1)


def _inputs(params: Any, b: int, device: torch.device, profile: str) -> dict[str, Any]:
    from tvts.models.video_vit import sample_keep

    g = torch.Generator().manual_seed(0)
    d, k = params.data, params.data.num_transcripts
    grid = (d.frame_size // params.model.video.patch_size) ** 2
    slices = max(1, d.num_frames // params.model.video.tubelet)
    lo, hi = TEXT_TOKENS[profile]
    lengths = torch.randint(lo, hi + 1, (b, k), generator=g)
    width = int(lengths.max())
    mask = (torch.arange(width)[None, None] < lengths[..., None]).long()
    return {
        "video": torch.randn(b, 3, d.num_frames, d.frame_size, d.frame_size, generator=g
                             ).to(device),
        "keep": torch.stack([sample_keep(slices, grid, d.mask_ratio, g) for _ in range(b)]
                            ).to(device),
        "input_ids": (torch.randint(1000, 20000, (b, k, width), generator=g) * mask).to(device),
        "attention_mask": mask.to(device),
        "order": torch.stack([torch.randperm(k, generator=g) for _ in range(b)]).to(device),
        "video_ids": [f"v{i}" for i in range(b)],
    }


def _matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Dense square matmul rate, the machine's own ceiling for this dtype."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    reps, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < 1.0 or reps < 5:
        a @ b
        reps += 1
        sync()
        elapsed = time.perf_counter() - t0
    return 2 * n**3 * reps / elapsed / 1e12


def _sdpa_context(name: str | None) -> Any:
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION}[name]
    return sdpa_kernel([backend])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flop_shares(counts: dict[str, dict[Any, int]], total: int) -> dict[str, float]:
    """The share of the counted FLOPs in each part of the model."""
    shares = {}
    for part in ("video", "text", "sorter", "proj"):
        key = next((k for k in counts if k.split(".")[-1] == part and k.count(".") == 1), None)
        if key is not None and total:
            shares[part] = round(sum(counts[key].values()) / total, 4)
    return shares


def run_one(profile: str, config: dict[str, Any], b: int, steps: int,
            text_dir: str | None = None, device_name: str = "auto") -> dict[str, Any]:
    """Build the model as the pretrain stage does, apply `config`, time `steps` steps."""
    from torch.utils.flop_counter import FlopCounterMode

    from tvts.models.attention import set_fused_attention
    from tvts.models.factory import build_tvts
    from tvts.train.loop import use_bf16
    from tvts.train.optim import adamw
    from tvts.train.tasks import PretrainTask

    cfg = {**OURS, **config}
    use_cuda = torch.cuda.is_available() if device_name == "auto" else device_name == "cuda"
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(0)
    params = _params(profile, text_dir)
    model = build_tvts(params, grad_checkpointing=cfg["ckpt"])
    model.video.drop_before_embed = cfg["drop_before_embed"]
    if not cfg["text_cache"]:
        model.text._cache = None  # the release encodes every transcript at every step
    set_fused_attention(model, cfg["fused_attn"])
    model = model.to(device).train()
    bf16 = use_bf16(cfg["precision"], device)
    wrapped: torch.nn.Module = model
    if cfg["compile"] == "blocks":
        for blk in model.video.blocks:
            blk.compile()
    elif cfg["compile"] is not None:
        wrapped = torch.compile(model, mode=cfg["compile"])  # type: ignore[assignment]
    if cfg["ddp"] != "none":
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=0, world_size=1)
        wrapped = DDP(wrapped, device_ids=[0] if use_cuda else None,
                      find_unused_parameters=cfg["ddp"] == "find_unused")
    opt = adamw(model.parameters(), lr=1e-4, weight_decay=0.05, device=device,
                impl=cfg["optimizer"])
    task = PretrainTask()
    batch = _inputs(params, b, device, profile)

    def sync() -> None:
        if use_cuda:
            torch.cuda.synchronize()

    losses: list[float] = []

    def step() -> None:
        with _sdpa_context(cfg["sdpa"]), torch.autocast(device.type, torch.bfloat16,
                                                        enabled=bf16):
            out = task.loss(wrapped, batch, 1)
        out["loss_backward"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out["loss"].detach()))  # the trainer logs it every step

    sync()
    if use_cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()  # compiles, when compiling
    sync()
    first = time.perf_counter() - t0
    for _ in range(2):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    step_s = (time.perf_counter() - t0) / steps
    peak = (torch.cuda.max_memory_allocated() if use_cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    counter = FlopCounterMode(display=False)
    with counter, _sdpa_context(cfg["sdpa"]), torch.autocast(device.type, torch.bfloat16,
                                                             enabled=bf16):
        out = task.loss(model, batch, 1)
        out["loss_backward"].backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    # the shares from a forward pass alone: in the backward, the counter credits an op to
    # every module still open (the sorter's gradient reaches the video tokens), so per-module
    # backward counts overlap
    # (the transcript cache set aside: the shares say what each part of the model computes)
    forward = FlopCounterMode(display=False)
    cache, model.text._cache = model.text._cache, None
    with torch.no_grad(), forward, _sdpa_context(cfg["sdpa"]), torch.autocast(
            device.type, torch.bfloat16, enabled=bf16):
        task.loss(model, batch, 1)
    model.text._cache = cache
    shares = _flop_shares(forward.get_flop_counts(), forward.get_total_flops())
    rate = _matmul_tflops(device, torch.bfloat16 if bf16 else torch.float32)
    achieved = flops / step_s / 1e12
    if cfg["ddp"] != "none":
        import torch.distributed as dist

        dist.destroy_process_group()
    real_tokens = float(batch["attention_mask"].float().mean())
    return {"batch": b, "step_s": round(step_s, 5), "clips_per_s": round(b / step_s, 2),
            "first_step_s": round(first, 3), "gflop_per_clip": round(flops / b / 1e9, 3),
            "achieved_tflops": round(achieved, 4), "matmul_tflops": round(rate, 4),
            "utilisation": round(achieved / rate, 4), "peak_mem_gib": round(peak / GIB, 4),
            "forward_flop_share": shares, "text_real_token_share": round(real_tokens, 3),
            "first_loss": losses[0], "dtype": "bf16" if bf16 else "fp32",
            "device": torch.cuda.get_device_name() if use_cuda else cpu_name()}


# ------------------------------------------------------------------ the comparison
def _child(profile: str, name: str, b: int, steps: int, text_dir: str | None,
           device: str) -> dict[str, Any]:
    job = {"profile": profile, "config": CONFIGS[name], "b": b, "steps": steps,
           "text_dir": text_dir, "device_name": device}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"batch": b, "error": " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(runs: dict[str, list[dict[str, Any]]], profile: str) -> dict[str, Any]:
    """Ratios against the reference at each batch, and the memory model of each config."""
    out: dict[str, Any] = {}
    for name, rows in runs.items():
        ok = [r for r in rows if "error" not in r]
        if not ok:
            continue
        entry: dict[str, Any] = {}
        if len(ok) >= 2:
            lo, hi = ok[0], ok[-1]
            per = (hi["peak_mem_gib"] - lo["peak_mem_gib"]) / (hi["batch"] - lo["batch"])
            fixed = lo["peak_mem_gib"] - per * lo["batch"]
            entry["mem_per_sample_gib"] = round(per, 4)
            entry["mem_fixed_gib"] = round(fixed, 3)
            if profile == "paper" and per > 0:
                entry["largest_batch_80gb"] = int((80e9 / GIB - fixed) // per)
        ref = {r["batch"]: r for r in runs.get("reference", []) if "error" not in r}
        for r in ok:
            if r["batch"] in ref:
                entry[f"speedup_vs_reference_b{r['batch']}"] = round(
                    ref[r["batch"]]["step_s"] / r["step_s"], 3)
                entry[f"utilisation_ratio_vs_reference_b{r['batch']}"] = round(
                    r["utilisation"] / ref[r["batch"]]["utilisation"], 3)
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", nargs="+", default=["demo", "paper"])
    ap.add_argument("--configs", nargs="+", default=None, help="default: all for the device")
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (after 3 untimed)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--out", default="bench/results/train_step.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(run_one(**job)), flush=True)
        return
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    kind = "cuda" if cuda else "cpu"
    names = args.configs or [n for n in CONFIGS if cuda or n not in GPU_ONLY]
    result: dict[str, Any] = {"torch": torch.__version__, "device_kind": kind,
                              "flop_count": "torch.utils.flop_counter.FlopCounterMode: "
                              "matmuls, convolutions, attention; elementwise not counted",
                              "configs": {n: {**OURS, **CONFIGS[n]} for n in names},
                              "profiles": {}}
    with tempfile.TemporaryDirectory() as tmp:
        text_dir = None
        if "paper" in args.profiles:
            from transformers import DistilBertConfig, DistilBertModel

            text_dir = str(Path(tmp) / "distilbert")
            DistilBertModel(DistilBertConfig()).save_pretrained(text_dir)  # base sizes
        for profile in args.profiles:
            batches = args.batches or BATCHES[(profile, kind)]
            steps = args.steps or (10 if cuda or profile == "demo" else 3)
            runs: dict[str, list[dict[str, Any]]] = {}
            skip = set() if args.configs else SKIP.get((profile, kind), set())
            for name in (n for n in names if n not in skip):
                for b in batches:
                    r = _child(profile, name, b, steps, text_dir, args.device)
                    runs.setdefault(name, []).append(r)
                    print(json.dumps({"profile": profile, "config": name, **r}), flush=True)
            result["device"] = next((r["device"] for rows in runs.values() for r in rows
                                     if "device" in r), kind)
            result["profiles"][profile] = {"batches": list(batches), "timed_steps": steps,
                                           "runs": runs, "summary": _summary(runs, profile)}
    out = Path(args.out)
    write_results(out, result)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
