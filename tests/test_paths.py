"""tvts/paths.py and dvc.yaml name the same files: each stage's data deps (other stages'
outputs) and its outputs (outs, metrics, plots), in the same order of stages; the CLI finds a
missing input's maker and the fan-out stages from the paths module."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tvts import cli, paths
from tvts.provenance import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _name(entry: str | dict) -> Path:
    return Path(next(iter(entry)) if isinstance(entry, dict) else str(entry))


def dvc_outputs(stage: dict) -> set[Path]:
    return {_name(o) for kind in ("outs", "metrics", "plots") for o in stage.get(kind) or []}


def dvc_data_deps(stage: dict) -> set[Path]:
    """Deps that are files of the pipeline (code and params-given paths `${...}` aside)."""
    return {Path(d) for d in stage.get("deps", [])
            if not str(d).startswith(("tvts", "flows", "${"))}


def test_the_same_stages_in_the_same_order():
    assert list(paths.STAGES) == list(DVC)
    assert tuple(DVC) == cli.STAGES


@pytest.mark.parametrize("name", list(DVC))
def test_a_stage_reads_and_writes_what_dvc_yaml_says(name):
    assert set(paths.STAGES[name].outputs) == dvc_outputs(DVC[name])
    assert set(paths.STAGES[name].inputs) == dvc_data_deps(DVC[name])


def test_every_input_is_another_stages_output():
    for name, stage in paths.STAGES.items():
        for path in stage.inputs:
            maker = paths.producer_of(path)
            assert maker is not None and maker != name, (name, path)
            assert list(paths.STAGES).index(maker) < list(paths.STAGES).index(name)


def test_the_check_sees_a_renamed_output():
    renamed = {**DVC["pack"], "outs": ["data/pack/index2.parquet", *DVC["pack"]["outs"][1:]]}
    assert set(paths.STAGES["pack"].outputs) != dvc_outputs(renamed)


def test_the_cli_names_the_stage_that_makes_a_missing_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.producer_of("data/pack/shards/shard-00001.tar") == "pack"
    assert cli.producer_of(tmp_path / "models/pretrain/checkpoints/best.pt") == "pretrain"
    assert cli.producer_of("somewhere/else.parquet") is None
    assert paths.SHARDED_STAGES == ("asr", "dedup", "pack", "evaluate")
