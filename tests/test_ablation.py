"""Ablation grids without running them: grid files, what keys a cell, the ledger, the table.
The grid run itself (DVC experiments, kill and resume): tests/test_pipeline_integration.py."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

from tvts.errors import UserError
from tvts.experiments.ablation import (
    CellRecord,
    Ledger,
    cell_key,
    cell_params,
    code_fingerprint,
    data_fingerprint,
)
from tvts.experiments.grid import load_grid
from tvts.experiments.tables import build_table, markdown, write_summary

from .conftest import REPO

GRID = {
    "name": "t", "title": "T",
    "seeds": {"values": [0, 1, 2]},
    "columns": [{"set": "ssv2", "protocol": "linear", "label": "lin"},
                {"set": "ssv2", "protocol": "v2v", "label": "v2v"}],
    "paper": [{"label": "paper"}],
    "variants": [{"name": "scratch", "encoder": "init", "paper": [64.5]},
                 {"name": "base", "set": {"sort.lambda": 0.0}, "paper": [67.0]},
                 {"name": "ours", "paper": ["failed"]}],
}


def _grid(tmp_path: Path, **changes):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return load_grid(path)


def _record(variant: str, seed: int, lin: float, v2v: float, floor: float) -> CellRecord:
    return CellRecord(cell=f"t-{variant}-s{seed}", experiment=f"t-{variant}-s{seed}-abc",
                      variant=variant, seed=seed, key=f"{variant}{seed}", overrides={},
                      figures={"pretrain": {"lin": lin, "v2v": v2v},
                               "random": {"lin": floor, "v2v": 5.0}},
                      stages_s=100.0, total_s=104.0)


def test_shipped_grids_load_and_every_cell_resolves():
    for name in ("objectives", "sort_head", "ordering"):
        grid = load_grid(REPO / "ablations" / f"{name}.yaml")
        cells = grid.cells()
        assert len(cells) == 3 * sum(v.trains for v in grid.variants)
        for cell in cells:
            params = cell_params(REPO, cell)  # resolves as the stages will read it
            assert cell.overrides["pretrain.seed"] == cell.seed
            assert params["pretrain"]["seed"] == cell.seed


@pytest.mark.parametrize("change, message", [
    ({"variants": [{"name": "Bad Name"}]}, "lowercase"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "repeat"),
    ({"variants": [{"name": "s", "encoder": "init"}]}, "no variant trains"),
    ({"variants": [{"name": "s", "encoder": "nope"}]}, "not one of"),
    ({"variants": [{"name": "a", "set": {"pretrain.seed": 3}}]}, "seeds param"),
    ({"columns": [{"set": "ssv2", "protocol": "linaer"}]}, "not registered"),
    ({"variants": [{"name": "a", "paper": [1, 2]}]}, "paper figure"),
])
def test_a_bad_grid_names_what_is_wrong(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        _grid(tmp_path, **change)


def test_a_bad_override_fails_before_any_cell_runs(tmp_path):
    grid = _grid(tmp_path, variants=[{"name": "a", "set": {"sort.lamda": 1}}])
    with pytest.raises(UserError, match="lamda"):
        cell_params(REPO, grid.cells()[0])


def test_the_table_is_the_mean_and_spread_over_seeds_with_the_best_marked(tmp_path):
    grid = _grid(tmp_path)
    lin = {"base": [30.0, 34.0, 32.0], "ours": [40.0, 44.0, 45.0]}
    v2v = {"base": [20.0, 21.0, 22.0], "ours": [18.0, 19.0, 17.0]}
    floors = [25.0, 24.0, 26.0]
    records = [_record(v, s, lin[v][s], v2v[v][s], floors[s])
               for v in ("base", "ours") for s in range(3)]
    table = build_table(grid, records)
    rows = {label: cells for label, cells, _ in table.rows}
    mean, std = statistics.fmean(lin["ours"]), statistics.stdev(lin["ours"])
    assert rows["ours"][0] == (f"{mean:.1f} ± {std:.1f}", True)  # best linear
    assert rows["base"][0][1] is False and rows["base"][1][1] is True  # best v2v
    # the start point: the random floor of each seed (init is random from scratch)
    floor = f"{statistics.fmean(floors):.1f} ± {statistics.stdev(floors):.1f}"
    assert rows["scratch"][0][0] == floor and table.floor[0] == floor
    assert table.header[-1] == "paper" and [p for *_, p in table.rows] == [
        ["64.5"], ["67.0"], ["failed"]]
    assert table.missing == []
    text = markdown(grid, table, records)
    assert f"| ours | **{mean:.1f} ± {std:.1f}** |" in text
    assert "per cell on average 104 s" in text and "4.0% of the stages' time" in text
    page = write_summary(grid, records[:4], tmp_path / "out")
    assert "t-ours-s1, t-ours-s2" in (tmp_path / "out" / "index.md").read_text()
    assert page.read_text().count("<tr") == 1 + 3 + 1  # header, variants, floor


def test_ties_are_all_marked_and_one_seed_shows_no_spread(tmp_path):
    grid = _grid(tmp_path, seeds={"values": [0]})
    records = [_record("base", 0, 40.0, 1.0, 25.0), _record("ours", 0, 40.0, 2.0, 25.0)]
    rows = {label: cells for label, cells, _ in build_table(grid, records).rows}
    assert rows["base"][0] == ("40.0", True) and rows["ours"][0] == ("40.0", True)


def test_the_ledger_keeps_finished_cells_and_ignores_a_torn_line(tmp_path):
    ledger = Ledger(tmp_path / "cells.jsonl")
    ledger.append(_record("base", 0, 1.0, 1.0, 1.0))
    with open(ledger.path, "a") as f:
        f.write('{"cell": "t-ours-s0", "experi')  # a kill mid-write
    assert list(ledger.load()) == ["base0"]
    ledger.append(_record("ours", 0, 1.0, 1.0, 1.0))
    assert set(ledger.load()) == {"base0"}  # the torn line swallowed the next one's start
    with open(ledger.path, "a") as f:
        f.write("\n")
    ledger.append(_record("ours", 1, 1.0, 1.0, 1.0))
    assert set(ledger.load()) == {"base0", "ours1"}


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_a_cell_is_keyed_by_its_params_the_stages_code_and_the_data(tmp_path):
    root = tmp_path / "p"
    (root / "tvts").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"s": {"cmd": "x", "deps": ["tvts", "data/in.txt"]}}}))
    (root / "tvts/a.py").write_text("A = 1\n")
    (root / "docs/x.md").write_text("doc\n")
    (root / ".gitignore").write_text("/data/\n")
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "corpus": {"outs": [{"path": "data/c", "md5": "1"}]},
        "pretrain": {"outs": [{"path": "models/p", "md5": "2"}]}}}))
    _git(root, "init", "-q")
    code, data = code_fingerprint(root), data_fingerprint(root)
    (root / "docs/x.md").write_text("changed\n")  # no stage's code
    assert code_fingerprint(root) == code
    (root / "tvts/a.py").write_text("A = 2\n")  # uncommitted, as the experiment runs it
    assert code_fingerprint(root) != code
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    lock["stages"]["pretrain"]["outs"][0]["md5"] = "3"  # a cell's own stage: not the data
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert data_fingerprint(root) == data
    lock["stages"]["corpus"]["outs"][0]["md5"] = "4"
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert data_fingerprint(root) != data
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    key = cell_key(params, code, data, ["evaluate"])
    assert cell_key(params, code, data, ["evaluate"]) == key
    assert cell_key({**params, "seed": 1}, code, data, ["evaluate"]) != key
    assert cell_key(params, code, data, ["pretrain"]) != key
    # a default written out is the same params
    same = {**params, "sort": {**params["sort"], "blocks": 2}}
    assert cell_key(same, code, data, ["evaluate"]) == key
    (root / "dvc.lock").unlink()
    with pytest.raises(UserError, match="run `dvc repro` first"):
        data_fingerprint(root)


def test_cells_json_and_csv_hold_every_figure(tmp_path):
    from tvts.experiments.ablation import _write_cells

    records = [_record("base", 0, 30.0, 20.0, 25.0), _record("ours", 1, 40.0, 18.0, 24.0)]
    _write_cells(records, tmp_path)
    assert [r["cell"] for r in json.loads((tmp_path / "cells.json").read_text())] == [
        "t-base-s0", "t-ours-s1"]
    rows = (tmp_path / "cells.csv").read_text().splitlines()
    assert rows[0].startswith("cell,experiment,variant,seed,encoder,column,value")
    assert len(rows) == 1 + 2 * 2 * 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_cell_is_reported_and_the_others_run(tmp_path, monkeypatch, jobs):
    from tvts.experiments import ablation

    grid = _grid(tmp_path)
    cells = grid.cells()

    def fake_run_cell(root, cell, params, key, log_dir, save_lock, say):
        if cell.label == "t-base-s1":
            raise ablation.CellFailed(f"cell {cell.label}: `dvc repro` failed: boom")
        return _record(cell.variant.name, cell.seed, 1.0, 1.0, 1.0)

    monkeypatch.setattr(ablation, "run_cell", fake_run_cell)
    ledger = Ledger(tmp_path / "cells.jsonl")
    said: list[str] = []
    done, failed = ablation._run_cells(tmp_path, [(c, {}, c.label) for c in cells], ledger,
                                       tmp_path / "logs", jobs, said.append)
    assert len(done) == len(cells) - 1 and failed == ["cell t-base-s1: `dvc repro` failed: boom"]
    assert len(ledger.load()) == len(cells) - 1  # only finished cells reach the ledger
    assert any("boom" in s for s in said)


def test_a_cell_saves_the_stages_its_targets_ran(tmp_path):
    """`dvc exp save` commits these only: DVC refuses to save when any stage's output is
    missing (the workspace's reports page, a stage the grid does not run)."""
    from tvts.experiments.ablation import _ran_stages

    assert _ran_stages(REPO, ["evaluate"]) == [
        "sources", "corpus", "asr", "validate", "downstream", "dedup", "pack", "pretrain",
        "post_pretrain", "evaluate"]
    assert _ran_stages(REPO, ["pack"])[-1] == "pack" and "pretrain" not in _ran_stages(
        REPO, ["pack"])


def test_no_cell_starts_once_the_code_changed_under_the_grid(tmp_path, monkeypatch):
    from tvts.experiments import ablation

    grid = _grid(tmp_path)
    ran: list[str] = []

    def fake_run_cell(root, cell, params, key, log_dir, save_lock, say):
        ran.append(cell.label)
        return _record(cell.variant.name, cell.seed, 1.0, 1.0, 1.0)

    prints = iter(["start", "start", "edited", "edited", "edited", "edited"])
    monkeypatch.setattr(ablation, "run_cell", fake_run_cell)
    monkeypatch.setattr(ablation, "code_fingerprint", lambda root: next(prints))
    cells = grid.cells()[:3]
    done, failed = ablation._run_cells(tmp_path, [(c, {}, c.label) for c in cells],
                                       Ledger(tmp_path / "cells.jsonl"), tmp_path, 1,
                                       lambda s: None, code="start")
    assert ran == [c.label for c in cells[:2]] and len(done) == 2 and len(failed) == 1
    assert "code changed since the grid started" in failed[0]
