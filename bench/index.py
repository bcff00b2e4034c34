"""Writes the table of benches at the top of bench/README.md: each bench script, what it
measures (its docstring's first sentence), how to run it, its results file and the date and
commit of the figures there. Run after a bench rewrote its results:

    python bench/index.py
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- bench-index:start -->", "<!-- bench-index:end -->"
HELPERS = {"index.py", "results_io.py"}


def benches() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name not in HELPERS)


def _first_sentence(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=[.:])\s", text, maxsplit=1)[0].rstrip(":.")


def _results(path: Path) -> str | None:
    text = path.read_text()
    found = (re.search(r'"--out", default="(bench/results/[\w.-]+\.json)"', text)
             or re.search(r"(bench/results/[\w.-]+\.json)", text))
    return found.group(1) if found else None


def _last_commit(rel: str) -> str:
    out = subprocess.run(["git", "log", "-1", "--format=%cs %h", "--", rel], cwd=HERE.parent,
                         capture_output=True, text=True).stdout.strip()
    return out or "not committed"


def table() -> str:
    rows = ["| bench | what it measures | results (date, commit) |", "|---|---|---|"]
    for path in benches():
        results = _results(path)
        where = f"`{results}` ({_last_commit(results)})" if results else "printed"
        rows.append(f"| `python bench/{path.name}` | {_first_sentence(path)} | {where} |")
    return "\n".join(rows)


def main() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table()}\n{END}{tail}")
    print(f"wrote the table of {len(benches())} benches into {README}")


if __name__ == "__main__":
    main()
