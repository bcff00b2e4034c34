"""What every stage entry shares: resolved-params records, metrics, progress, summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import yaml
from tqdm import tqdm

from tvts import paths
from tvts.config import Params
from tvts.errors import UserError
from tvts.storage import atomic_write_text
from tvts.tables import read_table

if TYPE_CHECKING:  # the stages that never read frames do not import torch through here
    from tvts.data.tvts_dataset import VideoEntry
    from tvts.video.packed import PackedIndex


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


PACK_DIR = paths.PACK


def packed_frames(params: Params, device_type: str, pack_dir: Path = PACK_DIR
                  ) -> tuple[PackedIndex | None, bool]:
    """The pack stage's frames for the loaders (None when `pack.enabled` is off), and whether
    their JPEGs are decoded on the training device (`pack.decode`; auto: on a GPU)."""
    from tvts.video.packed import PackedIndex

    if not params.pack.enabled:
        return None, False
    index = read_table(pack_dir / "index.parquet", "pack_index")
    short = params.data.resize_short
    other = index.filter(pl.min_horizontal("width", "height") != short)
    if other.height:
        row = other.row(0, named=True)
        raise UserError(
            f"{pack_dir}: {other.height} packed videos have frames of another short side "
            f"(e.g. {row['video_id']}: {row['width']}x{row['height']}) than data.resize_short "
            f"= {short}: pack again (`dvc repro pack`, or `tvts stage pack`)")
    shards = params.pack.shards_uri or str(pack_dir / "shards")
    mode = params.pack.decode
    on_device = mode == "device" or (mode == "auto" and device_type == "cuda")
    return PackedIndex(index, shards, params.corpus.s3), on_device


def split_packed(entries: list[VideoEntry], packed: PackedIndex | None
                 ) -> tuple[list[VideoEntry], list[tuple[str, str]]]:
    """The entries with packed frames (all of them without packing), and (video_id, reason)
    of those the pack stage left out."""
    if packed is None:
        return entries, []
    left_out = [(e.video_id, "not packed: the pack stage quarantined it "
                             "(data/pack/quarantine.parquet)") for e in entries
                if e.video_id not in packed]
    return [e for e in entries if e.video_id in packed], left_out
