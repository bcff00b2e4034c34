"""An ablation grid: variants (params overrides) x seeds, what each cell reports, and the
paper's figures for the same rows.

A grid file (ablations/*.yaml) names the params every cell sets (`base`), the variants, the
seeds param and its values, and the table's columns (a set and an evaluation protocol: the
figure is the protocol's registered main figure, tvts.eval.registry). Each trained variant
x seed is a cell, run as one DVC experiment; a variant with `encoder` set trains nothing and
reports that evaluated encoder of the grid's cells instead (M_scratch: `init`, the start
point, which is `random` when the encoder starts from scratch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tvts.errors import UserError
from tvts.eval.registry import ENCODERS, PROTOCOLS

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # grid and variant names: parts of DVC exp names
FLOOR_ENCODER = "random"  # the random-weights floor every table shows


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    set: str  # a downstream set name, or `transcripts` (the corpus sorting test)
    protocol: str
    label: str | None = None
    figure: str | None = None  # default: the protocol's main figure
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _known(self) -> Column:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not registered "
                             f"({', '.join(PROTOCOLS)})")
        return self

    @property
    def metric(self) -> str:
        return self.figure or PROTOCOLS[self.protocol].main_figure

    @property
    def title(self) -> str:
        return self.label or f"{self.set} {self.protocol} {self.metric}"


class Variant(_Strict):
    name: str
    label: str | None = None
    set: dict[str, Any] = {}  # dotted params keys (as `dvc exp run -S`), on top of `base`
    # report this evaluated encoder of the grid's cells instead of training (the start point)
    encoder: str | None = None
    # the paper's figure for this row, one per paper column (same order); null: none
    paper: list[float | str | None] = []

    @model_validator(mode="after")
    def _check(self) -> Variant:
        if not NAME.match(self.name):
            raise ValueError(f"variant name {self.name!r}: lowercase letters, digits, - and _")
        if self.encoder is not None:
            if self.encoder not in ENCODERS:
                raise ValueError(f"variant {self.name}: encoder {self.encoder!r} is not one "
                                 f"of {', '.join(ENCODERS)}")
            if self.set:
                raise ValueError(f"variant {self.name}: `encoder` reports the other cells' "
                                 "evaluated encoder; it trains nothing, so `set` has no use")
        return self

    @property
    def trains(self) -> bool:
        return self.encoder is None


class Seeds(_Strict):
    param: str = "pretrain.seed"
    values: list[int] = Field(min_length=1)


class PaperColumn(_Strict):
    label: str  # e.g. "paper: SSV2 fine-tuning top-1 (table 2)"


class Grid(_Strict):
    name: str
    title: str
    notes: str = ""
    # the stages each cell runs (dvc repro targets); the stages before them are the
    # workspace's, shared by every cell
    targets: list[str] = ["evaluate"]
    base: dict[str, Any] = {}
    seeds: Seeds
    columns: list[Column] = Field(min_length=1)
    paper: list[PaperColumn] = []
    variants: list[Variant] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Grid:
        if not NAME.match(self.name):
            raise ValueError(f"grid name {self.name!r}: lowercase letters, digits, - and _")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if not any(v.trains for v in self.variants):
            raise ValueError("no variant trains: every one reports another's encoder")
        for v in self.variants:
            if len(v.paper) > len(self.paper):
                raise ValueError(f"variant {v.name}: {len(v.paper)} paper figure(s) for "
                                 f"{len(self.paper)} paper column(s)")
            for key in v.set:
                if key.lstrip("+") == self.seeds.param:
                    raise ValueError(f"variant {v.name} sets {key}, the grid's seeds param")
        return self

    def cells(self) -> list[Cell]:
        """Seed by seed (every variant's first seed first: a grid stopped early still has a
        row for each variant)."""
        return [Cell(self, v, s) for s in self.seeds.values for v in self.variants if v.trains]


@dataclass(frozen=True)
class Cell:
    grid: Grid
    variant: Variant
    seed: int

    @property
    def overrides(self) -> dict[str, Any]:
        """Every params key this cell sets: the grid's base, the variant's, the seed."""
        return {**self.grid.base, **self.variant.set, self.grid.seeds.param: self.seed}

    @property
    def label(self) -> str:
        return f"{self.grid.name}-{self.variant.name}-s{self.seed}"


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such grid file (the shipped ones: ablations/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a grid is a mapping (name, title, seeds, columns, variants)")
    try:
        return Grid.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'grid'}: {err['msg']}"
                             for err in e.errors())
        raise UserError(f"{path}: {problems}") from None


def cell_figures(details: dict[str, Any], grid: Grid) -> dict[str, dict[str, float]]:
    """Encoder -> column title -> value, from the evaluate stage's details
    (metrics/details/eval.json: set -> protocol -> encoder -> figures)."""
    out: dict[str, dict[str, float]] = {}
    for col in grid.columns:
        by_encoder = details.get(col.set, {}).get(col.protocol, {})
        if not isinstance(by_encoder, dict):
            continue
        for encoder, figures in by_encoder.items():
            if isinstance(figures, dict) and isinstance(figures.get(col.metric), (int, float)):
                out.setdefault(encoder, {})[col.title] = float(figures[col.metric])
    return out
