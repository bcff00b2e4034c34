"""`reports/index.html`: one page linking every report of the last run, with the headline
metrics of each stage and the figures inline. Everything from data (metric names, values,
paths) is HTML-escaped; the page loads nothing from the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from tvts.storage import atomic_write_text

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff;
       max-width: 70em; }
h2 { margin-top: 1.4em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #888; }
figure { margin: 0.5em 0 1em; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


@dataclass(frozen=True)
class Report:
    """One thing to link: a page, a file or a figure (`image` ones are shown inline)."""

    label: str
    path: Path
    image: bool = False


@dataclass(frozen=True)
class StageSection:
    stage: str
    metrics: dict[str, Any] | None  # headline metrics (nested); {} not run, None: none kept
    reports: list[Report]


def flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td class=\"num\">{escape(_value(v))}</td></tr>"
                   for k, v in flatten(metrics))
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def _link(report: Report, page_dir: Path) -> str:
    if not report.path.exists():
        return (f"<li class=\"missing\">{escape(report.label)}: "
                f"<code>{escape(report.path.as_posix())}</code> (not made by this run)</li>")
    href = Path(os.path.relpath(report.path, page_dir)).as_posix()
    if report.image:
        return (f"<li><figure><a href=\"{escape(href)}\"><img src=\"{escape(href)}\" "
                f"alt=\"{escape(report.label)}\"></a>"
                f"<figcaption>{escape(report.label)}</figcaption></figure></li>")
    return f"<li><a href=\"{escape(href)}\">{escape(report.label)}</a></li>"


def write_index(path: str | Path, sections: list[StageSection], title: str,
                notes: list[str] | None = None) -> Path:
    """The index page at `path`: per stage, its headline metrics and its reports."""
    path = Path(path)
    page_dir = path.parent
    parts = [f"<h1>{escape(title)}</h1>"]
    parts += [f"<p>{escape(n)}</p>" for n in notes or []]
    parts.append("<ul>" + "".join(f"<li><a href=\"#{escape(s.stage)}\">{escape(s.stage)}</a>"
                                  "</li>" for s in sections) + "</ul>")
    for s in sections:
        parts.append(f"<h2 id=\"{escape(s.stage)}\">{escape(s.stage)}</h2>")
        if s.metrics is not None:
            parts.append(_metrics_table(s.metrics) if s.metrics else
                         "<p class=\"missing\">no metrics: the stage has not run</p>")
        if s.reports:
            parts.append("<ul class=\"reports\">" + "".join(_link(r, page_dir)
                                                           for r in s.reports) + "</ul>")
    html = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")
    atomic_write_text(path, html)
    return path
