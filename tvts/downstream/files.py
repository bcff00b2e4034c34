"""Reading annotation files as a hostile user may hand them over: each defect is one UserError
that names the file, the line (or the key) and what was expected, never a traceback.

Annotation files travel through spreadsheets, editors and mirrors: a UTF-8 byte-order mark
(Excel's "CSV UTF-8") is dropped; any other byte that is not UTF-8 is an error on its line
(the releases are UTF-8, a Latin-1 copy has been re-saved by a tool)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from tvts.errors import UserError


def read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}, line {line}: byte 0x{data[e.start]:02x} is not UTF-8 text; the release's "
            "files are UTF-8: re-save this one as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_json(path: Path, expect: type[list] | type[dict]) -> Any:
    """The file's JSON, whose top level must be a list or an object as the release has it."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, expect):
        want = "a list" if expect is list else "an object"
        raise UserError(f"{path}: expected {want} at the top level, found "
                        f"{_kind(data)}")
    return data


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-empty line, without CR/LF or outer spaces (the
    releases have both)."""
    for number, ln in enumerate(read_text(path).splitlines(), 1):
        if ln.strip():
            yield number, ln.strip()


def csv_rows(path: Path, need: set[str], what: str, delimiter: str = ","
             ) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header holding at least `need`; a row that lacks one
    of those values (a short or truncated line) is an error naming its line."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    have = set(reader.fieldnames or ())
    if not need <= have:
        raise UserError(f"{path}: lacks the column(s) {sorted(need - have)} of {what} (header "
                        f"{reader.fieldnames}; needs {sorted(need)})")
    for r in reader:
        short = sorted(k for k in need if r.get(k) is None)
        if short:
            raise UserError(f"{path}, line {reader.line_num}: the row ends before column(s) "
                            f"{short}; expected {len(reader.fieldnames or ())} comma-separated "
                            "values as in the header")
        yield reader.line_num, r


def field(item: Any, key: str, path: Path, where: str, kind: type | tuple[type, ...] = str,
          optional: bool = False) -> Any:
    """item[key] checked for its type; `where` says which entry (e.g. "entry 3")."""
    if not isinstance(item, dict):
        raise UserError(f"{path}, {where}: expected an object with {key!r}, found {_kind(item)}")
    if key not in item or (optional and item[key] is None):
        if optional:
            return None
        raise UserError(f"{path}, {where}: missing key {key!r}")
    value = item[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise UserError(f"{path}, {where}: {key!r} is {value!r}; expected {names}")
    return value


def integer(text: str, path: Path, line: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{path}, line {line}: {what} {text!r} is not an integer") from None


def number(text: str, path: Path, line: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{path}, line {line}: {what} {text!r} is not a number") from None


def plain_name(name: str) -> bool:
    """A file name without any folder part: an id that names a clip or an image must not
    reach outside its folder (`../x`, `/abs/x`, `C:\\x`)."""
    if not name or name in (".", ".."):
        return False
    return len(PurePosixPath(name).parts) == 1 and len(PureWindowsPath(name).parts) == 1


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list",
               dict: "an object"}


def _kind(value: Any) -> str:
    return "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)
