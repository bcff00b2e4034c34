"""What code produced a result: the import closure of a module inside this project, and a
digest of that code.

Persisted caches (feature shards, fine-tuning results, packed shards) are reused across runs
when their fingerprint matches; a fingerprint that covered only weights and settings served
results of old code after a bug fix. `code_digest` hashes the source of every project module
the producing code can run (the static import closure of its entry modules, imports inside
functions included, `if TYPE_CHECKING:` blocks not), so an edit there invalidates the cache
and an edit elsewhere does not. The same closure tells which files a DVC stage depends on
(tests/test_stage_deps.py).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the folder holding the `tvts` package
PACKAGES = ("tvts", "flows")


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The source file of a project module (`tvts.eval.features`), None if it has none."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in `tree` (inside functions too), except under `if
    TYPE_CHECKING:`, which never runs."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif _type_checking(node):
            todo += getattr(node, "orelse", [])
        else:
            todo += ast.iter_child_nodes(node)
    return found


def _imported(name: str, path: Path) -> set[str]:
    """Project modules `path` (module `name`) names in its import statements."""
    tree = ast.parse(path.read_bytes(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
            continue
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        found.add(target)
        # `from tvts.eval import features` imports a module, not a name
        found.update(f"{target}.{a.name}" for a in node.names)
    return {f for f in found if f.split(".")[0] in PACKAGES}


def _closure(name: str, root: Path) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        mod = todo.pop()
        if mod in seen or (path := module_path(mod, root)) is None:
            continue
        seen.add(mod)
        # importing a.b.c runs the __init__ of a and a.b first
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(_imported(mod, path) - seen)
    return seen


def import_closure(modules: Iterable[str], root: Path = ROOT) -> set[str]:
    """Every project module that importing `modules` can load (statically: each import
    statement anywhere in a module counts, whether or not it runs)."""
    out: set[str] = set()
    for name in modules:
        if module_path(name, root) is None:
            raise ValueError(f"no module {name!r} under {root}")
        out |= _closure(name, root)
    return out


def model_modules(*models: Any) -> set[str]:
    """The project modules defining the classes of `models` (torch modules) and of all their
    submodules."""
    return {type(m).__module__ for model in models for m in model.modules()
            if type(m).__module__.split(".")[0] in PACKAGES}


def code_digest(*modules: str, root: Path = ROOT) -> str:
    """A hash of the source of `modules` and every project module they import (read afresh
    on every call: compute it once per run, not per item)."""
    h = hashlib.blake2b(digest_size=12)
    for name in sorted(import_closure(modules, root)):
        path = module_path(name, root)
        assert path is not None
        h.update(f"{name}\n".encode())
        h.update(path.read_bytes())
    return h.hexdigest()
