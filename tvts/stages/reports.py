"""`reports` stage: reports/index.html, linking every report of the last run with each stage's
headline metrics (metrics/<stage>.json) and its figures inline."""

from __future__ import annotations

import json
from pathlib import Path

from tvts import paths
from tvts.config import Params
from tvts.reports.index import Report, StageSection, write_index
from tvts.stages.common import details_path

INDEX = paths.REPORTS_INDEX

# stage -> its reports (its metrics: paths.metrics_of); paths relative to the workspace
STAGE_REPORTS: dict[str, list[Report]] = {
    "corpus": [],
    "asr": [],
    "validate": [
        Report("ASR validation: great-expectations Data Docs (per expectation, the failing "
               "videos)", paths.VALIDATION_REPORT / "index.html")],
    "downstream": [],
    "dedup": [
        Report("leakage review: every flagged pair, its matching frames side by side",
               paths.LEAKAGE_REPORT / "index.html")],
    "pack": [],
    "pretrain": [
        Report("pretraining curves", paths.report_dir("pretrain") / "curves.png", image=True)],
    "post_pretrain": [
        Report("post-pretraining curves", paths.report_dir("post_pretrain") / "curves.png",
               image=True)],
    "evaluate": [
        Report("evaluation summary: every set, protocol, metric and encoder (Markdown)",
               paths.EVAL_SUMMARY)],
}
PLOTS_PAGE = Path("dvc_plots/index.html")  # what `dvc plots show` writes


def _figure_label(stem: str) -> str:
    if stem.startswith("top5-"):
        return f"top-5 class scores after fine-tuning: {stem[5:]}"
    return f"linear-probe confusion matrix: {stem.removeprefix('confusion-')}"


def sections(root: Path) -> list[StageSection]:
    out = []
    for stage, reports in STAGE_REPORTS.items():
        metrics_path = root / paths.metrics_of(stage)
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        found = [Report(r.label, root / r.path, r.image) for r in reports]
        if stage == "evaluate":
            found += [Report(_figure_label(png.stem), png, image=True)
                      for png in sorted((root / paths.EVAL_FIGURES).glob("*.png"))]
        found.append(Report("every figure the stage recorded (JSON)",
                            details_path(metrics_path)))
        out.append(StageSection(stage, metrics, found))
    return out


def run(params: Params, root: Path = Path("."), index_path: Path = INDEX) -> str:
    notes = [f"Profile {params.profile}, seed {params.seed}. `dvc metrics show` lists the "
             "same headline metrics; `dvc plots show` draws the curves interactively."]
    secs = sections(root)
    grids = sorted((root / paths.ABLATIONS_REPORTS).glob("*/index.html"))
    if grids:  # `tvts ablate`'s tables
        secs.append(StageSection("ablations", None, [
            Report(f"ablation grid {page.parent.name}: mean ± std over seeds, with the paper's "
                   "figures", page) for page in grids]))
    secs.append(StageSection("plots", None, [Report(
        "`dvc plots show`: every plot of dvc.yaml, interactive (this run's, if it was "
        "run since)", root / PLOTS_PAGE)]))
    path = write_index(index_path, secs, "tvts: reports of the last run", notes)
    ran = sum(1 for s in secs if s.metrics)
    return f"reports: {path} ({ran} stages with metrics)"
