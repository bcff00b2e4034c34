"""An ablation grid's table in the layout of the paper's: rows = variants, columns = the grid's
protocols and sets, each figure the mean and standard deviation over seeds, the best row of
each column marked, the random-weights floor below, and the paper's own figures beside."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from tvts.experiments.grid import FLOOR_ENCODER, Grid, Variant
from tvts.storage import atomic_write_text

if TYPE_CHECKING:
    from tvts.experiments.ablation import CellRecord

TRAINED_ENCODER = "pretrain"  # a trained variant's row: its pretraining export


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # over seeds (n - 1); None with one seed
    n: int

    def text(self, digits: int) -> str:
        spread = "" if self.std is None else f" ± {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}{spread}"


def column_digits(stats: list[Stat]) -> int:
    """3 decimals for a column of fractions (accuracies in [0, 1]), 1 for percentages."""
    return 3 if stats and all(abs(s.mean) <= 1 for s in stats) and any(
        s.mean for s in stats) else 1


def stat(values: list[float]) -> Stat | None:
    if not values:
        return None
    return Stat(statistics.fmean(values),
                statistics.stdev(values) if len(values) > 1 else None, len(values))


def _per_seed(records: list[CellRecord], encoder: str | tuple[str, ...], column: str
              ) -> list[float]:
    """One value per seed: the cells' figure for the first of `encoder` they have (cells of
    one seed evaluate the same floor: their mean)."""
    names = (encoder,) if isinstance(encoder, str) else encoder
    by_seed: dict[int, list[float]] = {}
    for r in records:
        for name in names:
            if column in r.figures.get(name, {}):
                by_seed.setdefault(r.seed, []).append(r.figures[name][column])
                break
    return [statistics.fmean(v) for _, v in sorted(by_seed.items())]


def row_stats(grid: Grid, variant: Variant, records: list[CellRecord]) -> dict[str, Stat]:
    """Column title -> the variant's figure over seeds."""
    if variant.trains:
        mine, encoder = [r for r in records if r.variant == variant.name], TRAINED_ENCODER
    else:
        # the start point: `init` where it differs from random, else random (evaluate
        # leaves `init` out when it would be `random` again)
        mine = records
        encoder = (variant.encoder, FLOOR_ENCODER) if variant.encoder == "init" \
            else variant.encoder
    out = {}
    for col in grid.columns:
        s = stat(_per_seed(mine, encoder, col.title))
        if s is not None:
            out[col.title] = s
    return out


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[tuple[str, list[tuple[str, bool]], list[str]]]  # label, (text, best), paper
    floor: list[str]
    missing: list[str]


def build_table(grid: Grid, records: list[CellRecord]) -> Table:
    stats = {v.name: row_stats(grid, v, records) for v in grid.variants}
    floors = {col.title: stat(_per_seed(records, FLOOR_ENCODER, col.title))
              for col in grid.columns}
    digits, best = {}, {}
    for col in grid.columns:
        found = [s[col.title] for s in stats.values() if col.title in s]
        digits[col.title] = column_digits(found + [f for f in [floors[col.title]] if f])
        values = [round(s.mean, digits[col.title]) for s in found]
        if values:  # compared as shown: rows that print the same mean are tied
            best[col.title] = max(values) if col.higher_is_better else min(values)
    rows = []
    for v in grid.variants:
        cells = []
        for col in grid.columns:
            s, d = stats[v.name].get(col.title), digits[col.title]
            cells.append(("–", False) if s is None else
                         (s.text(d), round(s.mean, d) == best.get(col.title)))
        paper = [("–" if x is None else str(x)) for x in v.paper]
        paper += ["–"] * (len(grid.paper) - len(paper))
        rows.append((v.label or v.name, cells, paper))
    floor = []
    for col in grid.columns:
        f = floors[col.title]
        floor.append("–" if f is None else f.text(digits[col.title]))
    done = {r.cell for r in records}
    missing = [c.label for c in grid.cells() if c.label not in done]
    header = ["variant", *[c.title for c in grid.columns], *[p.label for p in grid.paper]]
    return Table(header, rows, floor, missing)


def _timing(records: list[CellRecord]) -> str:
    if not records:
        return "No cell has finished yet."
    total = sum(r.total_s for r in records)
    stages = sum(r.stages_s for r in records)
    return (f"{len(records)} cell(s): {total / 60:.1f} min in all; per cell on average "
            f"{total / len(records):.0f} s, of which the stages (`dvc repro`) "
            f"{stages / len(records):.0f} s and the runner (worktree, linking, `dvc exp "
            f"save`) {(total - stages) / len(records):.1f} s "
            f"({(total - stages) / stages:.1%} of the stages' time).")


def _seeds_note(grid: Grid) -> str:
    return (f"Mean ± standard deviation over seeds {grid.seeds.param} = "
            f"{', '.join(map(str, grid.seeds.values))} (n - 1 in the deviation); **bold**: the "
            "best row of the column (ties all bold). The floor is the same architecture with "
            "random weights, evaluated in every cell.")


def markdown(grid: Grid, table: Table, records: list[CellRecord]) -> str:
    lines = [f"# {grid.title}", "", _seeds_note(grid), ""]
    if grid.notes:
        lines += [grid.notes.strip(), ""]
    lines += ["| " + " | ".join(table.header) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|"]
    for label, cells, paper in table.rows:
        shown = [f"**{t}**" if b else t for t, b in cells]
        lines.append("| " + " | ".join([label, *shown, *paper]) + " |")
    lines.append("| random weights (floor) | " + " | ".join(
        table.floor + ["–"] * len(grid.paper)) + " |")
    lines += ["", _timing(records)]
    if table.missing:
        lines += ["", f"Cells not run yet: {', '.join(table.missing)}."]
    lines += ["", "Every cell: `cells.csv`, `cells.json`; each is a DVC experiment "
              "(`dvc exp show`)."]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; }
tr.floor td { color: #666; font-style: italic; }
th.paper, td.paper { background: #f6f6f6; }
"""


def html(grid: Grid, table: Table, records: list[CellRecord]) -> str:
    n_cols = len(grid.columns)
    paper_th = ' class="paper"'
    head = "".join(f"<th{paper_th if i > n_cols else ''}>{escape(h)}</th>"
                   for i, h in enumerate(table.header))
    body = []
    for label, cells, paper in table.rows:
        tds = "".join(f"<td class=\"{'num best' if b else 'num'}\">{escape(t)}</td>"
                      for t, b in cells)
        tds += "".join(f"<td class=\"num paper\">{escape(p)}</td>" for p in paper)
        body.append(f"<tr><td>{escape(label)}</td>{tds}</tr>")
    floor = "".join(f"<td class=\"num\">{escape(t)}</td>" for t in table.floor)
    floor += "<td class=\"num paper\">–</td>" * len(grid.paper)
    body.append(f"<tr class=\"floor\"><td>random weights (floor)</td>{floor}</tr>")
    notes = [_seeds_note(grid).replace("**bold**", "bold")]
    if grid.notes:
        notes.append(grid.notes.strip())
    notes.append(_timing(records))
    if table.missing:
        notes.append(f"Cells not run yet: {', '.join(table.missing)}.")
    notes.append("Every cell: cells.csv, cells.json; each is a DVC experiment (dvc exp show).")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(grid.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{escape(grid.title)}</h1>\n<table><tr>{head}</tr>\n" + "\n".join(body)
            + "\n</table>\n" + "".join(f"<p>{escape(n)}</p>\n" for n in notes)
            + "<p><a href=\"cells.csv\">cells.csv</a> · <a href=\"cells.json\">cells.json"
            "</a></p>\n</body>\n</html>\n")


def write_summary(grid: Grid, records: list[CellRecord], out_dir: Path) -> Path:
    """index.md and index.html in `out_dir`; returns the HTML page."""
    table = build_table(grid, records)
    atomic_write_text(out_dir / "index.md", markdown(grid, table, records))
    page = out_dir / "index.html"
    atomic_write_text(page, html(grid, table, records))
    return page
