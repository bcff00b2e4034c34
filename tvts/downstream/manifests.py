"""Reading a downstream set into manifest rows.

A set is `demo` (the generator's set of that name, written in the real release's layout and
read by the same adapter), a local directory of clips labelled by the sub-folder they are in,
or an official release `{format, root[, videos, split]}` read by `formats.ADAPTERS`.
"""

from __future__ import annotations

from pathlib import Path

from tvts.config import VIDEO_SUFFIXES, DownstreamSource
from tvts.downstream.formats import ADAPTERS, Row, row
from tvts.errors import UserError
from tvts.storage import walk_files

DEMO_ROOT = Path("data/corpus/demo/downstream")
DEMO_SETS = ("ssv2", "msrvtt")  # what the generator writes, each in its release's format


def read_directory(name: str, root: Path) -> list[Row]:
    """Every video file under `root`; its label is the first sub-folder (None at the top)."""
    rows = []
    files, unlisted = walk_files(root)
    entries = [(p, None) for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    # broken links and the like: quarantined with their reason, never dropped silently
    entries += [(u.path, u.reason) for u in unlisted]
    for path, missing in sorted(entries):
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        rows.append(row(name, rel.with_suffix("").as_posix(), path, None, label,
                        missing=missing, source=str(path)))
    return rows


def check_unique(key: str, rows: list[Row]) -> list[Row]:
    """A clip listed twice (by id, or two ids that find one file) is an error naming both
    places: in two splits it leaks test items into training; twice in one split it weighs
    double."""
    seen_id: dict[str, Row] = {}
    seen_file: dict[str, Row] = {}
    for r in rows:
        for seen, value, what in ((seen_id, r["downstream_id"], "id"),
                                  (seen_file, r["uri"] if r["missing"] is None else None,
                                   "file")):
            if value is None:
                continue
            first = seen.setdefault(value, r)
            if first is not r:
                raise UserError(
                    f"{key}: {what} {value!r} is listed twice: {first['source']} "
                    f"({first['split'] or 'no split'}: {first['downstream_id']}) and "
                    f"{r['source']} ({r['split'] or 'no split'}: {r['downstream_id']})"
                    + ("; a clip in two splits leaks test items into training"
                       if first["split"] != r["split"] else "")
                    + ". Remove one of the two entries.")
    return rows


def read_set(name: str, source: str | DownstreamSource, demo_root: Path = DEMO_ROOT
             ) -> list[Row]:
    key = f"downstream.sets.{name}"
    if isinstance(source, DownstreamSource):
        root = Path(source.root)
        if not root.is_dir():
            raise UserError(f"{key}.root = {source.root!r}: not a directory (the folder that "
                            f"holds the {source.format} annotation files)")
        if source.videos and not Path(source.videos).is_dir():
            raise UserError(f"{key}.videos = {source.videos!r}: not a directory")
        return check_unique(key, ADAPTERS[source.format](name, root, source.videos,
                                                           source.split))
    if source == "demo":
        if name not in DEMO_SETS:
            raise UserError(f"{key} = demo, but the demo generator has no set {name!r}; demo "
                            f"sets: {', '.join(DEMO_SETS)}. Point it at a directory of clips "
                            "or a release {format, root}.")
        root = demo_root / name
        if not root.is_dir():
            raise UserError(f"{key} = demo, but {root} does not exist: run the corpus stage "
                            "with corpus.source = demo first (dvc repro corpus)")
        return check_unique(key, ADAPTERS[name](name, root))
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"{key} = {source!r}: not a directory. Use `demo`, a local directory "
                        "of clips (one sub-folder per label) or {format: <name>, root: <dir>}.")
    rows = read_directory(name, root)
    if not any(r["missing"] is None for r in rows):
        raise UserError(f"{key} = {source!r} holds no video files "
                        f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return rows
