"""The models the evaluate stage compares: exported TVTS models (`models/<stage>/`) and the
random-weights floor (the same architecture as built before the first training step)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tvts.config import Params
from tvts.errors import MissingInput, UserError
from tvts.models.factory import build_tvts, model_signature
from tvts.models.tvts_model import TVTSModel

EXPORT_WEIGHTS = "tvts.safetensors"
EXPORT_INFO = "tvts.json"


def load_exported(params: Params, directory: str | Path) -> TVTSModel:
    """The whole TVTS model (video and text encoders, projections, sorter) of an export."""
    from safetensors.torch import load_file

    directory = Path(directory)
    weights, info = directory / EXPORT_WEIGHTS, directory / EXPORT_INFO
    for path in (weights, info):
        if not path.exists():
            raise MissingInput(str(path), "an exported model")
    saved = json.loads(info.read_text()).get("signature")
    expected = json.loads(json.dumps(model_signature(params)))
    if saved != expected:
        raise UserError(f"{directory} was trained with another architecture than params.yaml "
                        f"describes ({saved} vs {expected}): retrain it (dvc repro) or evaluate "
                        "with the params it was trained with")
    model = build_tvts(params)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def random_model(params: Params) -> TVTSModel:
    """Seeded random weights: what pretraining starts from (same seed, same build)."""
    torch.manual_seed(params.seed)
    return build_tvts(params).eval()
