"""The demo's fine-tuning recipe against the paper's, on the workspace's demo run: the evaluate
stage's classification fine-tuning (`finetune_set`, the same code and data) on the SSV2-format set
with one setting changed at a time, one encoder, one run each.

    dvc repro                                   # the encoders and manifests it reads
    python bench/finetune_recipes.py [--encoder pretrain]
        [--out bench/results/finetune_recipes.json]

Each variant trains in a scratch folder (nothing in the workspace is written but the JSON).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from results_io import write_results

from tvts.config import load_params
from tvts.eval.features import ViewSpec
from tvts.eval.protocols import set_splits
from tvts.eval.trained_protocols import finetune_set
from tvts.stages import evaluate
from tvts.tables import read_table
from tvts.train.distributed import Dist

PAPER_AUG = {"mixup": 0.8, "cutmix": 1.0, "randaugment": "rand-m7-n4-mstd0.5-inc1"}
NO_MIX = {"mixup": 0.0, "cutmix": 0.0}
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("VideoMAE's base lr 1e-3, the paper's augmentations, 12 epochs",
     {"lr": 1e-3, "epochs": 12, **PAPER_AUG}),
    ("lr 1e-2, the paper's augmentations", {"lr": 1e-2, "epochs": 30, **PAPER_AUG}),
    ("lr 4e-2, the paper's augmentations", {"lr": 4e-2, "epochs": 30, **PAPER_AUG}),
    ("lr 1e-2, no mixing, RandAugment m3-n2 (the demo default's kind)",
     {"lr": 1e-2, "epochs": 30, **NO_MIX, "randaugment": "rand-m3-n2-mstd0.5-inc1"}),
    ("lr 1e-2, no augmentation", {"lr": 1e-2, "epochs": 30, **NO_MIX, "randaugment": None}),
    ("lr 1e-2, mixup 0.2 only", {"lr": 1e-2, "epochs": 30, "mixup": 0.2, "cutmix": 0.0,
                                 "randaugment": None}),
    ("the demo default", {}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="pretrain")
    ap.add_argument("--out", default="bench/results/finetune_recipes.json")
    args = ap.parse_args()
    base = load_params()
    device = torch.device("cpu")
    net = evaluate._models(base.model_copy(update={"evaluate": base.evaluate.model_copy(
        update={"encoders": [args.encoder]})}), None, device)
    splits = set_splits(read_table(evaluate.DOWNSTREAM / "ssv2.parquet", "downstream"))
    d = base.data
    test = ViewSpec(d.num_frames, d.frame_size, d.resize_short, d.decoder,
                    *base.evaluate.test_views, base.evaluate.token_grid)
    rows = []
    for label, change in VARIANTS:
        ft = base.evaluate.finetune.model_copy(update=change)
        params = base.model_copy(update={"evaluate": base.evaluate.model_copy(
            update={"finetune": ft})})
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            res = finetune_set(params, "ssv2", splits, test, net, Path(tmp),
                               Dist(0, 1, 0, device))[args.encoder]
        m = res.metrics
        rows.append({"variant": label, "settings": ft.model_dump(mode="json", include={
            "lr", "epochs", "mixup", "cutmix", "randaugment", "batch_size"}),
            "top1": round(m["top1"], 2), "top5": round(m["top5"], 2),
            "final_train_loss": round(m["train_loss"], 4), "steps": m["steps"],
            "seconds": round(time.perf_counter() - t, 1)})
        print(f"| {label} | {rows[-1]['top1']:.1f} | {rows[-1]['final_train_loss']:.3f} |",
              flush=True)
    out = {"encoder": args.encoder, "set": "ssv2 (demo)", "test_clips": m["test_clips"],
           "classes": m["classes"], "chance_top1": round(m["chance_top1"], 2),
           "chance_loss_ln_classes": round(float(torch.log(torch.tensor(m["classes"]))), 4),
           "rows": rows}
    write_results(args.out, out)


if __name__ == "__main__":
    main()
