"""Rewinding dvclive's step logs to a checkpoint, so a resumed run's curves are those of a run
that was never interrupted: no rows from steps after the checkpoint, none twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvts.storage import atomic_write_text


def rewind(live_dir: str | Path, train_through: int, val_rows: list[dict[str, Any]]) -> None:
    """Keep the rows of steps <= `train_through` of every metric except the validation ones,
    whose files are rewritten from `val_rows` (the checkpoint's validation history: dicts of
    `step` and `group/name` values) — a validation logged after the checkpoint is dropped."""
    plots = Path(live_dir) / "plots" / "metrics"
    if not plots.exists():
        return
    val: dict[str, list[tuple[int, float]]] = {}
    for row in val_rows:
        for name, value in row.items():
            if name != "step":
                val.setdefault(name, []).append((int(row["step"]), float(value)))
    for tsv in sorted(plots.rglob("*.tsv")):
        name = tsv.relative_to(plots).with_suffix("").as_posix()
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header = lines[0]
        if name in val:
            rows = [f"{step}\t{value}" for step, value in val.pop(name)]
        else:
            rows = [ln for ln in lines[1:] if ln and int(ln.split("\t", 1)[0]) <= train_through]
        atomic_write_text(tsv, "\n".join([header, *rows]) + "\n")
