"""One pretraining variant against its random floor: memorised or learned, and what transferred.

    dvc repro pack                                       # the workspace's data, any world
    python bench/transfer_probe.py NAME [key=value ...]  # e.g. pretrain.epochs=10 sort.lambda=0
        [--out bench/results/transfer_probe.json]

Pretrains from the workspace's data (`data/dedup/videos.parquet`, `data/asr/words.parquet`,
`data/pack/`) with the params overrides given (dotted keys, YAML values), in a scratch folder
under `.cache/tvts/transfer_probe/NAME` (nothing of the workspace's outputs is touched), then
evaluates the export and the random floor of the same run: the frozen probes on the SSV2-format
set (linear, attentive, v2v) and transcript sorting on the corpus' test split with its controls.
Beside the figures it keeps the training curves that tell memorising from learning: the sort
accuracy on the training batches and on the validation videos at each validation, and the
contrastive loss on both. The run is added to `--out` under NAME (a rerun replaces it).

The experiments of docs/stages/training.md ("the demo world and transfer") were run this way,
on workspaces whose params.yaml set the world (`corpus.demo.objects_per_video`,
`corpus.demo.named_fraction`, `corpus.demo.num_videos`).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import yaml
from results_io import machine, write_results

from tvts.config import load_params, resolve
from tvts.stages import evaluate, pretrain
from tvts.stages.common import details_path

PROBES = {"linear": "top1", "attentive": "top1", "v2v": "R@1"}


def with_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r}: write key=value (e.g. pretrain.epochs=10)")
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return raw


def curve(live: Path, split: str, name: str, every: int = 1) -> list[float]:
    path = live / "plots" / "metrics" / split / f"{name}.tsv"
    if not path.exists():
        return []
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    # one point per validation: the row at the end of each stretch of `every` rows
    return [round(float(r[name]), 3) for r in rows[every - 1::every]]


def run(name: str, overrides: list[str], params_file: str = "params.yaml") -> dict[str, Any]:
    raw = with_overrides(json.loads(json.dumps(load_params(params_file).to_dict())), overrides)
    if raw["sort"]["lambda"] == 0:  # no sort loss: choose the checkpoint by the held-out loss
        raw["pretrain"]["monitor"], raw["pretrain"]["monitor_mode"] = "val/loss", "min"
    raw["evaluate"]["encoders"] = ["pretrain", "random"]
    raw["evaluate"]["tasks"] = {"ssv2": list(PROBES)}
    params = resolve(raw)
    work = Path(params.corpus.cache_dir) / "transfer_probe" / name
    t0 = time.perf_counter()
    pretrain.run(params, out_dir=work / "pretrain", metrics_path=work / "pretrain.json",
                 live_dir=work / "live", report_dir=work / "report_pretrain")
    t1 = time.perf_counter()
    evaluate.run(params, models={"pretrain": work / "pretrain"}, out_dir=work / "eval",
                 report_dir=work / "report", metrics_path=work / "eval.json")
    got = json.loads(details_path(work / "eval.json").read_text())
    sort = got.get("transcripts", {}).get("sort", {}).get("pretrain", {})
    steps_per_val = max(1, len(curve(work / "live", "train", "sort_acc"))
                        // max(1, len(curve(work / "live", "val", "sort_acc"))))
    return {
        "overrides": overrides,
        "probes": {p: {enc: round(m[key], 2) for enc, m in got["ssv2"][p].items()}
                   for p, key in PROBES.items()},
        "sort_test": {k: sort.get(k) for k in ("acc_video", "acc_other_video", "acc_text_only")},
        "curves": {
            "train_sort_acc": curve(work / "live", "train", "sort_acc", steps_per_val),
            "val_sort_acc": curve(work / "live", "val", "sort_acc"),
            "train_loss_contrastive": curve(work / "live", "train", "loss_contrastive",
                                            steps_per_val),
            "val_loss": curve(work / "live", "val", "loss"),
        },
        "pretrain_s": round(t1 - t0, 1),
        "evaluate_s": round(time.perf_counter() - t1, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("overrides", nargs="*", help="dotted params keys: key=value")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="bench/results/transfer_probe.json")
    args = ap.parse_args()
    world = load_params(args.params).corpus.demo
    result = run(args.name, args.overrides, args.params)
    result["world"] = {"objects_per_video": world.objects_per_video,
                       "named_fraction": world.named_fraction, "num_videos": world.num_videos}
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if out.exists() else {}
    runs[args.name] = result
    write_results(out, {"machine": machine(), "runs": runs,
                        "note": "probes: SSV2-format set, pretrain export vs random floor of "
                                "the same run (%); sort_test: the corpus' test split; curves: "
                                "one point per validation"})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
