"""The reviewer's decisions file: keep / exclude per (pretraining video, downstream item).

A CSV with the header `video_id,downstream_set,downstream_id,decision,note`; lines starting
with `#` are comments. Its decisions win over the automatic ones on the next run: `keep` clears
a flagged pair, `exclude` removes a video whether or not it was flagged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from tvts.errors import UserError

COLUMNS = ("video_id", "downstream_set", "downstream_id", "decision", "note")
DECISIONS = ("keep", "exclude")
TEMPLATE = ("# Leakage review decisions: one line per (pretraining video, downstream item) pair.\n"
            "# decision: keep (not a leak) or exclude (drop the video from pretraining).\n"
            "# The dedup stage applies them on its next run; the report lists flagged pairs.\n"
            + ",".join(COLUMNS) + "\n")

PairKey = tuple[str, str, str]


def decision_line(video_id: str, downstream_set: str, downstream_id: str, decision: str,
                  note: str = "") -> str:
    """One line of the decisions file, CSV-quoted: ids with commas, quotes or line breaks
    read back as the same pair."""
    buf = io.StringIO()
    # "\r\n" as the terminator makes the writer quote fields holding either; a leading "#"
    # is quoted too, or the line would read as a comment
    quoting = csv.QUOTE_ALL if video_id.lstrip().startswith("#") else csv.QUOTE_MINIMAL
    csv.writer(buf, lineterminator="\r\n", quoting=quoting).writerow(
        [video_id, downstream_set, downstream_id, decision, note])
    return buf.getvalue().removesuffix("\r\n")


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each CSV record, comment and blank lines left out; a
    quoted field may span lines."""
    numbers: list[int] = []

    def data_lines() -> Iterator[str]:
        for n, line in enumerate(text.splitlines(keepends=True), 1):
            if line.lstrip().startswith("#"):
                continue
            numbers.append(n)
            yield line

    reader = csv.reader(data_lines())
    pulled = 0
    for fields in reader:
        first = numbers[pulled]
        pulled = reader.line_num
        if any(f.strip() for f in fields):
            yield first, fields


def read_decisions(path: str | Path) -> dict[PairKey, tuple[str, str]]:
    """(video_id, set, item id) -> (decision, note); a missing file means no decisions."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        records = list(_records(path.read_text()))
    except csv.Error as e:
        raise UserError(f"{path}: not valid CSV ({e}); quote a field that holds a comma or a "
                        'quote ("a,b", "say ""x""")') from None
    if not records:
        return {}
    header_no, header = records[0]
    fields = [f.strip() for f in header]
    missing = [c for c in COLUMNS[:4] if c not in fields]
    if missing:
        raise UserError(f"{path}:{header_no}: the header lacks {', '.join(missing)}; expected "
                        f"{','.join(COLUMNS)}")
    out: dict[PairKey, tuple[str, str]] = {}
    for n, values in records[1:]:
        if len(values) > len(fields):
            raise UserError(f"{path}:{n}: {len(values)} fields where the header has "
                            f"{len(fields)}; quote a value that holds a comma")
        row = dict(zip(fields, values, strict=False))
        decision = (row.get("decision") or "").strip().lower()
        if decision not in DECISIONS:
            raise UserError(f"{path}:{n}: decision {row.get('decision')!r}; allowed: "
                            f"{', '.join(DECISIONS)}")
        key = tuple((row.get(c) or "").strip() for c in COLUMNS[:3])
        if not all(key):
            raise UserError(f"{path}:{n}: video_id, downstream_set and downstream_id must all "
                            "be given")
        out[key] = (decision, (row.get("note") or "").strip())  # type: ignore[index]
    return out


def apply_decisions(pairs: pl.DataFrame, decisions: dict[PairKey, tuple[str, str]],
                    source: str) -> pl.DataFrame:
    """Add `decision` and `decided_by` to flagged pairs (auto: exclude), then the file's
    decisions, including pairs the search did not flag (their similarity is null)."""
    pairs = pairs.with_columns(pl.lit("exclude").alias("decision"),
                               pl.lit("auto").alias("decided_by"))
    if not decisions:
        return pairs
    over = pl.DataFrame(
        [{"video_id": k[0], "downstream_set": k[1], "downstream_id": k[2],
          "file_decision": d} for k, (d, _note) in decisions.items()],
        schema={"video_id": pl.Utf8, "downstream_set": pl.Utf8, "downstream_id": pl.Utf8,
                "file_decision": pl.Utf8})
    keys = ["video_id", "downstream_set", "downstream_id"]
    merged = pairs.join(over, on=keys, how="full", coalesce=True)
    return merged.with_columns(
        pl.coalesce("file_decision", "decision").alias("decision"),
        pl.when(pl.col("file_decision").is_not_null()).then(pl.lit(source))
        .otherwise(pl.col("decided_by")).alias("decided_by"),
    ).drop("file_decision")
