"""dvc.yaml's code dependencies are complete: every project module a stage can import (its
static import closure, tvts.provenance) lies under one of the stage's deps, so an edit
anywhere in the code a stage runs reruns it. Package data read through a module counts too
(the profiles, read by tvts.config)."""

from __future__ import annotations

import re

import pytest
import yaml

from tvts.provenance import ROOT, import_closure, module_path

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
COMMAND = re.compile(r"python -m tvts stage (\w+)")
# data files a module reads: the module -> the folder a stage using it must depend on
DATA_OF = {"tvts.config.loader": "tvts/profiles"}


def code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if str(d).startswith(("tvts", "flows"))]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def needed(name: str) -> set[str]:
    """Files the stage `name` runs: its module's closure (tvts/__init__.py aside: it holds the
    version string only), plus the data those modules read."""
    mods = import_closure([f"tvts.stages.{name}"]) - {"tvts"}
    files = {str(module_path(m).relative_to(ROOT)) for m in mods}  # type: ignore[union-attr]
    return files | {data for mod, data in DATA_OF.items() if mod in mods}


def uncovered(name: str, stage: dict) -> list[str]:
    return sorted(f for f in needed(name) if not covered(f, code_deps(stage)))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dependency(name):
    stage = STAGES[name]
    match = COMMAND.fullmatch(stage["cmd"])
    assert match and match.group(1) == name, f"{name}: unexpected command {stage['cmd']!r}"
    missing = uncovered(name, stage)
    assert not missing, (f"dvc.yaml stage {name!r} runs {missing} but does not depend on "
                         "them: add them (or their folder) to its deps")


def test_the_check_finds_a_missing_dependency():
    stage = dict(STAGES["pretrain"])
    stage["deps"] = [d for d in stage["deps"] if d != "tvts/losses.py"]
    assert uncovered("pretrain", stage) == ["tvts/losses.py"]


def test_closure_sizes():
    """What each stage's check covers (printed with -s; the README quotes it)."""
    sizes = {name: len(needed(name)) for name in STAGES}
    print("\n" + ", ".join(f"{n}: {k}" for n, k in sizes.items()))
    assert all(k >= 3 for k in sizes.values())
