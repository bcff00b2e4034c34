"""What every stage entry shares: resolved-params records, metrics, progress, summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from tvts.config import Params
from tvts.storage import atomic_write_text


def record_params(params: Params, out_dir: str | Path) -> None:
    """The fully resolved params next to a stage's outputs (params.yaml is sparse)."""
    text = yaml.safe_dump(params.to_dict(), sort_keys=False)
    atomic_write_text(Path(out_dir) / "params.resolved.yaml", text)


def details_path(metrics_path: str | Path) -> Path:
    """Where a stage's full record goes: `details/` beside its metrics file."""
    path = Path(metrics_path)
    return path.parent / "details" / path.name


def write_metrics(path: str | Path, headline: dict[str, Any],
                  details: dict[str, Any] | None = None) -> None:
    """`headline` at `path`: the few figures `dvc metrics show` lists for the stage, those a
    user compares across experiments (dvc.yaml declares these files as metrics); `details`,
    everything the stage measured, at `details_path(path)` (a plain output: a table of every
    counter of every stage reads like no table at all)."""
    if details is not None:
        write_json(details_path(path), details)
    write_json(path, headline)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def progress_bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, leave=False)
