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


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def progress_bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, leave=False)
