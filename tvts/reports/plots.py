"""Plots a person sees with no network: the HTML template `dvc plots show` fills (the Vega
libraries inlined instead of loaded from a CDN), and PNG figures rendered offline by
vl-convert from Vega-Lite specs: the training curves of a dvclive folder and confusion
matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvts.reports.assets import inline_script, script_safe_label, vega_bundle
from tvts.storage import atomic_path, atomic_write_text

# where `dvc plots show` finds its page template: .dvc/config's `plots.html_template`
# (relative to .dvc/). Committed, so that every clone's `dvc plots show` works (a teammate's,
# CI's, a temporary experiment's); `tvts reports setup` rewrites it after a vl-convert pin
# changes, and a test keeps the committed copy equal to what this module writes.
PLOTS_TEMPLATE = "offline_plots.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
table { border-spacing: 15px; }
"""


def plots_template() -> str:
    """A page for `dvc plots show --html-template`: DVC puts the plots at `{plot_divs}` and
    its CDN script tags at `{scripts}`, which this page leaves out; the Vega libraries are
    inlined."""
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>DVC plots</title>\n{refresh_tag}\n"
            f"<style>{_STYLE}</style>\n" + inline_script(vega_bundle()) +
            "\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")


def install_plots_template(dvc_dir: str | Path) -> Path:
    """Write the template where the project's DVC config points (`.dvc/offline_plots.html`)."""
    path = Path(dvc_dir) / PLOTS_TEMPLATE
    atomic_write_text(path, plots_template())
    return path


def write_png(spec: dict[str, Any], path: str | Path, scale: float = 2.0) -> Path:
    """Render a Vega-Lite spec to PNG, offline."""
    import vl_convert

    png = vl_convert.vegalite_to_png(spec, scale=scale)
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png)
    return path


SPARSE_POINTS = 40


@dataclass(frozen=True)
class Panel:
    """One chart of a figure: dvclive series (`train/loss`) drawn as labelled lines."""

    title: str
    series: tuple[tuple[str, str], ...]  # (dvclive name, legend label)
    rule: tuple[float, str] | None = None  # a horizontal reference line (value, label)


def read_dvclive_series(live_dir: str | Path, name: str) -> list[tuple[int, float]]:
    """(step, value) rows of one dvclive metric (`plots/metrics/<name>.tsv`)."""
    tsv = Path(live_dir) / "plots" / "metrics" / f"{name}.tsv"
    if not tsv.exists():
        return []
    rows = []
    for line in tsv.read_text().splitlines()[1:]:
        if line.strip():
            step, value = line.split("\t")[:2]
            rows.append((int(step), float(value)))
    return rows


def curves_spec(live_dir: str | Path, panels: Sequence[Panel], title: str
                ) -> dict[str, Any] | None:
    """A Vega-Lite figure of `panels` (two per row) from a dvclive folder; None when none of
    the series has a row."""
    charts = []
    for panel in panels:
        values = [{"step": step, "value": value, "series": label}
                  for name, label in panel.series
                  for step, value in read_dvclive_series(live_dir, name)]
        if not values:
            continue
        y: dict[str, Any] = {"field": "value", "type": "quantitative", "title": None,
                             "axis": {"format": "~g"},
                             "scale": {"zero": False}}
        encoding = {"x": {"field": "step", "type": "quantitative"}, "y": y,
                    "color": {"field": "series", "type": "nominal",
                              "legend": {"orient": "bottom", "title": None}}}
        counts = {label: sum(v["series"] == label for v in values) for _, label in panel.series}
        # per-epoch validations are a few points among hundreds of steps: mark them
        sparse = [v for v in values if counts[v["series"]] <= SPARSE_POINTS]
        layers: list[dict[str, Any]] = [
            {"data": {"values": values}, "mark": "line", "encoding": encoding}]
        if sparse:
            layers.append({"data": {"values": sparse}, "mark": {"type": "point",
                                                                 "filled": True},
                           "encoding": encoding})
        if panel.rule is not None:
            value, label = panel.rule
            layers.append({"data": {"values": [{"value": value, "label": label}]},
                           "mark": {"type": "rule", "strokeDash": [4, 3], "color": "#888"},
                           "encoding": {"y": {"field": "value", "type": "quantitative"}}})
            layers.append({"data": {"values": [{"value": value, "label": label}]},
                           "mark": {"type": "text", "align": "left", "dx": 4, "dy": -6,
                                    "color": "#666"},
                           "encoding": {"y": {"field": "value", "type": "quantitative"},
                                        "x": {"value": 0}, "text": {"field": "label"}}})
        charts.append({"title": panel.title, "width": 320, "height": 180, "layer": layers,
                       "resolve": {"scale": {"y": "shared"}}})
    if not charts:
        return None
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title,
            "columns": 2, "concat": charts, "background": "white",
            "resolve": {"scale": {"color": "independent"}}}


def write_curves(live_dir: str | Path, panels: Sequence[Panel], title: str,
                 path: str | Path) -> Path | None:
    """The training curves of a dvclive folder as one PNG; None when there are none."""
    spec = curves_spec(live_dir, panels, title)
    if spec is None:
        return None
    return write_png(spec, path)


def confusion_rows(actual: Sequence[Any], predicted: Sequence[Any]) -> list[dict[str, str]]:
    """The rows of `reports/eval/confusion/*.json`, the data of the `dvc plots show` page:
    DVC writes them unescaped into a `<script>` block, and a label comes from a user's
    annotation file, so each is made script-safe (`script_safe_label`, same look)."""
    return [{"actual": script_safe_label(str(a)), "predicted": script_safe_label(str(p))}
            for a, p in zip(actual, predicted, strict=True)]


def confusion_spec(rows: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """A confusion matrix (counts, actual x predicted) of `{"actual", "predicted"}` rows."""
    labels = sorted({str(r["actual"]) for r in rows} | {str(r["predicted"]) for r in rows})
    axis = {"type": "nominal", "sort": labels}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title,
        "background": "white",
        "data": {"values": [{"actual": str(r["actual"]), "predicted": str(r["predicted"])}
                            for r in rows]},
        "transform": [{"aggregate": [{"op": "count", "as": "clips"}],
                       "groupby": ["actual", "predicted"]}],
        "encoding": {"x": {"field": "predicted", **axis}, "y": {"field": "actual", **axis}},
        "layer": [{"mark": "rect",
                   "encoding": {"color": {"field": "clips", "type": "quantitative",
                                          "scale": {"scheme": "blues"}}}},
                  {"mark": {"type": "text", "fontSize": 10},
                   "encoding": {"text": {"field": "clips", "type": "quantitative"}}}],
        "width": {"step": 28}, "height": {"step": 28},
    }


# The training curves each training stage draws (dvclive names, as tvts.train.tasks logs them)
LOSS = Panel("loss", (("train/loss", "train: total"), ("train/loss_sort", "train: sort"),
                      ("train/loss_contrastive", "train: contrastive"),
                      ("val/loss", "held out: total")))
LR = Panel("learning rate", (("train/lr", "lr"),))
SPEED = Panel("training throughput", (("train/clips_per_s", "clips/s"),))


def pretrain_panels(chance_sort_acc: float) -> list[Panel]:
    return [LOSS,
            Panel("transcript-sort accuracy", (
                ("val/sort_acc", "held out, right video"),
                ("val/sort_acc_other_video", "held out, another clip's video"),
                ("train/sort_acc", "training batches")),
                rule=(chance_sort_acc, "chance")),
            LR, SPEED]


POST_PRETRAIN_PANELS = [
    LOSS, Panel("held-out retrieval R@1 (%)", (("val/r1_t2v", "text -> video"),
                                               ("val/r1_v2t", "video -> text"))),
    LR, SPEED]


def top5_spec(clips: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """The paper's figure 4: per clip (a row: its middle frame and its true label), the top-5
    class scores of each encoder (a column), normalised to sum to 100%; the true class in
    green. `clips`: {"label", "frame" (a data: URL or None), "scores": {encoder: [(class,
    score), ...]}}."""
    rows = []
    for clip in clips:
        charts: list[dict[str, Any]] = []
        if clip.get("frame"):
            charts.append({"data": {"values": [{"url": clip["frame"]}]},
                           "mark": {"type": "image", "width": 96, "height": 96},
                           "encoding": {"url": {"field": "url", "type": "nominal"}},
                           "width": 96, "height": 96})
        for encoder, top in clip["scores"].items():
            total = sum(s for _, s in top) or 1.0
            values = [{"class": c, "score": 100 * s / total, "true": c == clip["label"]}
                      for c, s in top]
            charts.append({
                "title": {"text": encoder, "fontSize": 11},
                "data": {"values": values},
                "mark": "bar",
                "encoding": {
                    "y": {"field": "class", "type": "nominal", "sort": "-x", "title": None,
                          "axis": {"labelLimit": 220}},
                    "x": {"field": "score", "type": "quantitative", "title": "% of top 5",
                          "scale": {"domain": [0, 100]}},
                    "color": {"field": "true", "type": "nominal", "legend": None,
                              "scale": {"domain": [True, False],
                                        "range": ["#2ca02c", "#9ecae1"]}}},
                "width": 160, "height": 96})
        rows.append({"title": {"text": f"true: {clip['label']}", "fontSize": 12},
                     "hconcat": charts})
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title,
            "background": "white", "vconcat": rows}
