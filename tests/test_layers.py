"""Lower layers never import higher ones (ARCHITECTURE.md): every import of a project module,
function-level ones included, goes to its own layer or a lower one. The layers, lowest first,
are the order below; a package not listed is a layer-1 module of its own (storage, tables...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tvts.provenance import ROOT

LAYERS: list[tuple[str, ...]] = [
    # names and paths only: the registry of protocols and encoders is read by the params
    # schema (which validates evaluate.tasks against it) and imports nothing of the project
    ("tvts.errors", "tvts.paths", "tvts.eval.registry"),
    ("tvts.config", "tvts.storage", "tvts.tables", "tvts.provenance", "tvts.parallel",
     "tvts.sharding", "tvts.metrics", "tvts.reports"),
    ("tvts.video", "tvts.corpus", "tvts.downstream", "tvts.asr"),
    ("tvts.losses",),
    ("tvts.models",),
    ("tvts.data", "tvts.dedup", "tvts.pack", "tvts.quality"),
    ("tvts.train",),
    ("tvts.eval",),
    ("tvts.stages",),
    # experiments beside the workspace (override runs, ablation grids): they run the stages
    ("tvts.experiments",),
    ("tvts.cli", "tvts.__main__", "flows"),
]


def layer_of(module: str) -> int | None:
    """The layer of the longest listed prefix of `module`; None outside the project."""
    best: tuple[int, int] | None = None
    for level, names in enumerate(LAYERS):
        for name in names:
            matches = module == name or module.startswith(name + ".")
            if matches and (best is None or len(name) > best[1]):
                best = (level, len(name))
    if best is None:
        return 1 if module.startswith("tvts.") else None
    return best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tvts.eval import registry`: the module imported decides, not the package
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m == "tvts" or m.startswith(("tvts.", "flows"))}


def upward_imports(files: list[Path]) -> list[str]:
    bad = []
    for path in files:
        importer = module_name(path)
        own = layer_of(importer)
        for target in sorted(imports_of(path)):
            level = layer_of(target)
            if own is not None and level is not None and level > own:
                bad.append(f"{importer} (layer {own}) imports {target} (layer {level})")
    return bad


FILES = sorted([*(ROOT / "tvts").rglob("*.py"), *(ROOT / "flows").rglob("*.py")])


def test_no_module_imports_a_higher_layer():
    assert upward_imports(FILES) == []


@pytest.mark.parametrize(("importer", "target"), [
    ("tvts/losses.py", "from tvts.models.sorter import SortTransformer\n"),
    ("tvts/train/tasks.py", "def f():\n    from tvts.eval.sorting import sort_accuracies\n"),
])
def test_the_check_finds_an_upward_import(tmp_path, monkeypatch, importer, target):
    source = ROOT / importer
    copy = tmp_path / importer
    copy.parent.mkdir(parents=True)
    copy.write_text(source.read_text() + "\n" + target)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert len(upward_imports([copy])) == 1
