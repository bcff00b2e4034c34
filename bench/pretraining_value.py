"""What pretraining bought, on the demo default, in one table: (a) random weights, (b) L_base
only (sort.lambda = 0), (c) full TVTS, each through pretrain -> post_pretrain -> evaluate.

    dvc repro                                  # (c) and (a): the pipeline's own run
    python bench/pretraining_value.py          # (b) in a scratch folder, then the table
        [--out bench/results/pretraining_value.json]
    python bench/pretraining_value.py --seeds 3  # the frozen probes over training seeds
        [--out bench/results/pretraining_value_seeds.json]

With `--seeds N`, each seed trains TVTS and L_base-only (sort.lambda = 0) from the workspace's
data and evaluates the pretrain exports and that seed's random-weights floor with the frozen
probes (linear, attentive, v2v on the SSV2-format set): every figure per seed, and the mean
and standard deviation of each encoder's figure and of its gain over the floor.

(c) and (a) are read from the workspace's `metrics/details/eval.json` (the evaluate stage always
evaluates the random-weights floor beside the trained encoders); (b) is trained here with the
same stage code on the same data (`data/dedup/videos.parquet`, `data/asr/words.parquet`,
`data/downstream/`), writing nothing in the workspace. With lambda = 0 the sort loss has no
weight, so (b) selects its best checkpoint by the held-out loss instead of sort accuracy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import write_results

from tvts.config import load_params, resolve
from tvts.stages import evaluate, post_pretrain, pretrain
from tvts.stages.common import details_path

ROWS = [("ssv2", "linear", "post_pretrain", "top1", "SSV2-format linear probe top-1 (%)"),
        ("ssv2", "attentive", "post_pretrain", "top1", "SSV2-format attentive probe top-1 (%)"),
        ("ssv2", "v2v", "post_pretrain", "R@1", "SSV2-format video-to-video R@1 (%)"),
        ("msrvtt", "t2v", "post_pretrain", "R@1", "MSR-VTT-format text-to-video R@1 (%)"),
        ("ssv2", "finetune", "pretrain", "top1", "SSV2-format fine-tuned top-1 (%)"),
        ("ssv2", "finetune", "pretrain", "top5", "SSV2-format fine-tuned top-5 (%)"),
        ("msrvtt", "t2v_finetune", "post_pretrain", "R@1",
         "MSR-VTT-format text-to-video R@1 after fine-tuning (%)"),
        ("msrvtt", "t2v_finetune", "post_pretrain", "MedR",
         "MSR-VTT-format text-to-video MedR after fine-tuning"),
        ("svo_probes", "svo", "post_pretrain", "verb_pair_acc",
         "SVO-Probes verb pairs, positive above negative"),
        ("transcripts", "sort", "pretrain", "acc_video", "sort accuracy, own video"),
        ("transcripts", "sort", "pretrain", "acc_text_only", "sort accuracy, text only"),
        ("transcripts", "sort", "pretrain", "acc_other_video", "sort accuracy, other video")]


def pick(metrics: dict[str, Any], s: str, p: str, enc: str, key: str) -> float | None:
    return metrics.get(s, {}).get(p, {}).get(enc, {}).get(key)


def train_lambda0(params_file: str, work: Path) -> dict[str, Any]:
    raw = json.loads(json.dumps(load_params(params_file).to_dict()))
    raw["sort"]["lambda"] = 0.0
    raw["pretrain"]["monitor"], raw["pretrain"]["monitor_mode"] = "val/loss", "min"
    raw["evaluate"]["encoders"] = ["pretrain", "post_pretrain"]
    params = resolve(raw)
    models = {"pretrain": work / "models/pretrain", "post_pretrain": work / "models/post_pretrain"}
    print(pretrain.run(params, out_dir=models["pretrain"], metrics_path=work / "pretrain.json",
                       live_dir=None))
    print(post_pretrain.run(params, init=models["pretrain"] / "checkpoints" / "best.pt",
                            out_dir=models["post_pretrain"],
                            metrics_path=work / "post_pretrain.json", live_dir=None))
    print(evaluate.run(params, models=models, out_dir=work / "eval", report_dir=work / "report",
                       metrics_path=work / "eval.json"))
    return json.loads(details_path(work / "eval.json").read_text())


PROBES = ("linear", "attentive", "v2v")


def probe_seed(params_file: str, seed: int, sort_lambda: float | None, work: Path
               ) -> dict[str, dict[str, float]]:
    """Pretrain at `seed` (with sort.lambda = `sort_lambda` when given) and probe the export and
    the random floor: protocol -> encoder -> main figure."""
    raw = json.loads(json.dumps(load_params(params_file).to_dict()))
    raw["seed"] = seed
    if sort_lambda is not None:
        raw["sort"]["lambda"] = sort_lambda
        if sort_lambda == 0:
            raw["pretrain"]["monitor"], raw["pretrain"]["monitor_mode"] = "val/loss", "min"
    raw["evaluate"]["encoders"] = ["pretrain", "random"]
    raw["evaluate"]["tasks"] = {"ssv2": list(PROBES)}
    raw["evaluate"]["sort"] = {**raw["evaluate"].get("sort", {}), "enabled": False}
    params = resolve(raw)
    print(pretrain.run(params, out_dir=work / "pretrain", metrics_path=work / "pretrain.json",
                       live_dir=None))
    print(evaluate.run(params, models={"pretrain": work / "pretrain"}, out_dir=work / "eval",
                       report_dir=work / "report", metrics_path=work / "eval.json"))
    got = json.loads(details_path(work / "eval.json").read_text())["ssv2"]
    return {p: {e: m["top1" if p != "v2v" else "R@1"] for e, m in got[p].items()}
            for p in PROBES}


def seeds_table(params_file: str, seeds: int, out: str) -> None:
    import statistics

    runs = []
    t = time.perf_counter()
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            tvts = probe_seed(params_file, seed, None, Path(tmp) / "tvts")
            base = probe_seed(params_file, seed, 0.0, Path(tmp) / "base")
        runs.append({"seed": seed, "tvts": {p: v["pretrain"] for p, v in tvts.items()},
                     "l_base_only": {p: v["pretrain"] for p, v in base.items()},
                     "random": {p: v["random"] for p, v in tvts.items()}})

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": round(statistics.mean(values), 2),
                "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}

    summary = {p: {enc: stats([r[enc][p] for r in runs])
                   for enc in ("tvts", "l_base_only", "random")} for p in PROBES}
    for p in PROBES:
        for enc in ("tvts", "l_base_only"):
            summary[p][f"{enc}_gain_over_random"] = stats([r[enc][p] - r["random"][p]
                                                           for r in runs])
    result = {"profile": load_params(params_file).profile, "seeds": seeds, "runs": runs,
              "summary": summary, "seconds": round(time.perf_counter() - t, 1),
              "note": "SSV2-format set, frozen probes on the pretrain export; top-1 (linear, "
                      "attentive) and R@1 (v2v) in percent; std over seeds (n - 1)"}
    write_results(out, result)
    print("| probe | random | L_base only | TVTS | TVTS - random |\n|---|---|---|---|---|")
    for p in PROBES:
        row = summary[p]
        cells = [row["random"], row["l_base_only"], row["tvts"], row["tvts_gain_over_random"]]
        print(f"| {p} | " + " | ".join(f"{c['mean']:.1f} +- {c['std']:.1f}" for c in cells)
              + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", default="metrics/details/eval.json",
                    help="the workspace's (c) and (a)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seeds", type=int, default=0,
                    help="train and probe this many seeds (the frozen probes only)")
    args = ap.parse_args()
    if args.seeds:
        seeds_table(args.params, args.seeds,
                    args.out or "bench/results/pretraining_value_seeds.json")
        return
    args.out = args.out or "bench/results/pretraining_value.json"
    full = json.loads(Path(args.metrics).read_text())
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = train_lambda0(args.params, Path(tmp))
    seconds = time.perf_counter() - t
    table = []
    for s, p, enc, key, label in ROWS:
        table.append({"metric": label, "set": s, "protocol": p, "key": key,
                      "a_random": pick(full, s, p, "random", key),
                      "b_l_base_only": pick(base, s, p, enc, key),
                      "c_tvts": pick(full, s, p, enc, key)})
    chance = {"sort_acc": pick(full, "transcripts", "sort", "pretrain", "chance_acc"),
              "ssv2_top1": pick(full, "ssv2", "linear", "post_pretrain", "chance_top1")}
    result = {"profile": load_params(args.params).profile, "chance": chance, "rows": table,
              "b_seconds": round(seconds, 1),
              "note": "(c)/(a): metrics/details/eval.json of `dvc repro`; (b): sort.lambda=0, best "
                      "checkpoint by val/loss; encoders after post_pretrain for the downstream "
                      "rows, the pretrain export for sorting and classification "
                      "fine-tuning"}
    write_results(args.out, result)
    print("| metric | (a) random | (b) L_base only | (c) TVTS |\n|---|---|---|---|")
    for r in table:
        cells = [r["a_random"], r["b_l_base_only"], r["c_tvts"]]
        print(f"| {r['metric']} | " + " | ".join("-" if c is None else f"{c:.3g}"
                                                 for c in cells) + " |")


if __name__ == "__main__":
    main()
