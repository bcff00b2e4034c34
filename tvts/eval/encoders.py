"""The models the evaluate stage compares: exported TVTS models (`models/<stage>/`) and two
floors of the same architecture: `random` (a truly untrained video encoder, seeded) and `init`
(the start point of pretraining, before any video training: the ImageMAE weights of
`model.video.init` at paper scale, the paper's Mscratch). The two are one model when
`model.video.init` is unset or `scratch` (the demo)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tvts.config import Params
from tvts.errors import MissingInput, UserError
from tvts.models.factory import build_tvts, model_signature
from tvts.models.tvts_model import TVTSModel
from tvts.paths import EXPORT_INFO, EXPORT_WEIGHTS


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


def init_model(params: Params) -> TVTSModel:
    """What pretraining starts from: the same seed and build, `model.video.init` loaded."""
    torch.manual_seed(params.train_seed)
    return build_tvts(params).eval()


def random_model(params: Params) -> TVTSModel:
    """Seeded random weights, whatever `model.video.init` says (the text encoder is the
    pretrained one the method always starts from)."""
    video = params.model.video.model_copy(update={"init": "scratch"})
    scratch = params.model_copy(update={"model": params.model.model_copy(
        update={"video": video})})
    return init_model(scratch)


def init_differs(params: Params) -> bool:
    """Whether the `init` floor is another model than `random`."""
    return params.model.video.init not in (None, "scratch")
