"""Reading a downstream set into manifest rows.

A set is `demo` (the generator's set of that name, in the real set's layout) or a local
directory of clips, labelled by the sub-folder they are in. Readers for the official
benchmark layouts plug in here (`READERS`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvts.errors import UserError

DEMO_ROOT = Path("data/corpus/demo/downstream")
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg"}

Row = dict[str, Any]


def _row(name: str, item_id: str, path: Path, split: str | None = None,
         label: str | None = None, caption: str | None = None) -> Row:
    return {"downstream_set": name, "downstream_id": item_id, "uri": str(path), "split": split,
            "label": label, "caption": caption}


def read_ssv2(name: str, root: Path) -> list[Row]:
    """Something-Something v2: train.json / validation.json, videos/<id>.webm."""
    rows = []
    for split in ("train", "validation"):
        listing = root / f"{split}.json"
        if not listing.exists():
            continue
        for item in json.loads(listing.read_text()):
            label = item["template"].replace("[", "").replace("]", "")
            rows.append(_row(name, str(item["id"]), root / "videos" / f"{item['id']}.webm",
                             split, label, item.get("label")))
    return rows


def read_msrvtt(name: str, root: Path) -> list[Row]:
    """MSR-VTT: MSR_VTT.json (videos with split, sentences), videos/all/<video_id>.mp4."""
    meta = json.loads((root / "MSR_VTT.json").read_text())
    captions: dict[str, str] = {}
    for s in meta["sentences"]:
        captions.setdefault(s["video_id"], s["caption"])
    return [_row(name, v["video_id"], root / "videos" / "all" / f"{v['video_id']}.mp4",
                 v.get("split"), None, captions.get(v["video_id"]))
            for v in meta["videos"]]


READERS: dict[str, Callable[[str, Path], list[Row]]] = {"ssv2": read_ssv2,
                                                       "msrvtt": read_msrvtt}


def read_directory(name: str, root: Path) -> list[Row]:
    """Every video file under `root`; its label is the first sub-folder (None at the top)."""
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES
                       and p.is_file()):
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        rows.append(_row(name, rel.with_suffix("").as_posix(), path, None, label))
    return rows


def read_set(name: str, source: str, demo_root: Path = DEMO_ROOT) -> list[Row]:
    if source == "demo":
        reader = READERS.get(name)
        if reader is None:
            raise UserError(f"downstream.sets.{name} = demo, but the demo generator has no set "
                            f"{name!r}; demo sets: {', '.join(READERS)}. Point it at a "
                            "directory of clips instead.")
        root = demo_root / name
        if not root.is_dir():
            raise UserError(f"downstream.sets.{name} = demo, but {root} does not exist: run the "
                            "corpus stage with corpus.source = demo first (dvc repro corpus)")
        return reader(name, root)
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"downstream.sets.{name} = {source!r}: not a directory. Use `demo` or "
                        "a local directory of clips (one sub-folder per label).")
    rows = read_directory(name, root)
    if not rows:
        raise UserError(f"downstream.sets.{name} = {source!r} holds no video files "
                        f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return rows
