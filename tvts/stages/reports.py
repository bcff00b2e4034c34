"""`reports` stage: reports/index.html, linking every report of the last run with each stage's
headline metrics (metrics/<stage>.json) and its figures inline."""

from __future__ import annotations

import json
from pathlib import Path

from tvts.config import Params
from tvts.reports.index import Report, StageSection, write_index
from tvts.stages.common import details_path

INDEX = Path("reports/index.html")

# stage -> (metrics file, its reports); paths relative to the workspace
STAGES: dict[str, tuple[str, list[Report]]] = {
    "corpus": ("metrics/corpus.json", []),
    "asr": ("metrics/asr.json", []),
    "validate": ("metrics/validate.json", [
        Report("ASR validation: great-expectations Data Docs (per expectation, the failing "
               "videos)", Path("reports/asr_validation/index.html"))]),
    "downstream": ("metrics/downstream.json", []),
    "dedup": ("metrics/dedup.json", [
        Report("leakage review: every flagged pair, its matching frames side by side",
               Path("reports/leakage/index.html"))]),
    "pack": ("metrics/pack.json", []),
    "pretrain": ("metrics/pretrain.json", [
        Report("pretraining curves", Path("reports/pretrain/curves.png"), image=True)]),
    "post_pretrain": ("metrics/post_pretrain.json", [
        Report("post-pretraining curves", Path("reports/post_pretrain/curves.png"),
               image=True)]),
    "evaluate": ("metrics/eval.json", [
        Report("evaluation summary: every set, protocol, metric and encoder (Markdown)",
               Path("reports/eval/summary.md"))]),
}
PLOTS_PAGE = Path("dvc_plots/index.html")  # what `dvc plots show` writes


def _figure_label(stem: str) -> str:
    if stem.startswith("top5-"):
        return f"top-5 class scores after fine-tuning: {stem[5:]}"
    return f"linear-probe confusion matrix: {stem.removeprefix('confusion-')}"


def sections(root: Path) -> list[StageSection]:
    out = []
    for stage, (metrics_rel, reports) in STAGES.items():
        metrics_path = root / metrics_rel
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        found = [Report(r.label, root / r.path, r.image) for r in reports]
        if stage == "evaluate":
            found += [Report(_figure_label(png.stem), png, image=True)
                      for png in sorted((root / "reports/eval/figures").glob("*.png"))]
        found.append(Report("every figure the stage recorded (JSON)",
                            details_path(metrics_path)))
        out.append(StageSection(stage, metrics, found))
    return out


def run(params: Params, root: Path = Path("."), index_path: Path = INDEX) -> str:
    notes = [f"Profile {params.profile}, seed {params.seed}. `dvc metrics show` lists the "
             "same headline metrics; `dvc plots show` draws the curves interactively."]
    secs = sections(root)
    secs.append(StageSection("plots", None, [Report(
        "`dvc plots show`: every plot of dvc.yaml, interactive (this run's, if it was "
        "run since)", root / PLOTS_PAGE)]))
    path = write_index(index_path, secs, "tvts: reports of the last run", notes)
    ran = sum(1 for s in secs if s.metrics)
    return f"reports: {path} ({ran} stages with metrics)"
