"""The evaluation registry: protocols and encoders are named once (tvts.eval.registry), and the
params schema, the default tasks, the evaluate stage's loop and the headline tables follow
from it. A protocol registered from here runs through the stage and reaches the metrics and the
summary without an edit to either."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvts.config import ParamsError, resolve
from tvts.eval import registry
from tvts.eval.registry import CAPTIONED, CLASSIFICATION, ProtocolSpec
from tvts.eval.runners import ProtocolResult, SetRun
from tvts.eval.summary import headline_metrics, summary_table

from .conftest import make_video, micro


def test_defaults_and_schema_follow_the_registry():
    assert registry.default_protocols(CLASSIFICATION) == ["linear", "attentive", "v2v",
                                                          "finetune"]
    assert registry.default_protocols(CAPTIONED) == ["t2v", "t2v_finetune"]
    # corpus-level tests are not set tasks
    assert "svo" not in registry.set_protocols() and "sort" not in registry.set_protocols()
    with pytest.raises(ParamsError) as err:
        resolve({"evaluate": {"tasks": {"ssv2": ["linear", "linnear"]}}})
    assert "'linnear'" in str(err.value) and "allowed: linear, attentive" in str(err.value)
    with pytest.raises(ParamsError, match="unknown encoder"):
        resolve({"evaluate": {"encoders": ["pretrain", "scratchy"]}})
    plan = resolve({"evaluate": {"tasks": {"ssv2": ["v2v"]}}}).eval_plan()
    assert [(t.protocol, t.requested) for t in plan["ssv2"]] == [("v2v", True)]
    assert not any(t.requested for t in resolve({}).eval_plan()["msrvtt"])


def _feature_norm(job: SetRun) -> ProtocolResult:
    """A toy protocol: the mean norm of each encoder's pooled test features, and the share of
    train clips it was given (it asks for train features)."""
    out = {}
    for name in job.models:
        test = job.features["test"][name]
        out[name] = {"norm": float(np.linalg.norm(test.mean.mean(1), axis=-1).mean()),
                     "train_clips": len(job.features["train"][name].ids),
                     "test_clips": len(test.ids)}
    return ProtocolResult(out)


@pytest.fixture
def toy_protocol():
    spec = registry.register_protocol(ProtocolSpec("feature_norm", "norm", _feature_norm,
                                                   train_features=True))
    yield spec
    registry.unregister_protocol(spec.name)


def test_a_registered_protocol_runs_through_the_stage(toy_protocol, tmp_path):
    from tvts.stages import downstream as downstream_stage
    from tvts.stages import evaluate as evaluate_stage

    clips = tmp_path / "clips"
    for label in ("left", "right"):
        (clips / label).mkdir(parents=True)
        for i in range(5):
            make_video(clips / label / f"{label}{i}.mp4", seconds=1.5, audio=False,
                       seed=i + (10 if label == "right" else 0))
    params = micro({"downstream": {"sets": {"mine": str(clips)}, "svo": None, "workers": 1},
                    "evaluate": {"encoders": ["random"], "tasks": {"mine": ["feature_norm"]},
                                 "sort": {"enabled": False}, "loader_workers": 0}})
    downstream_stage.run(params, tmp_path / "downstream", tmp_path / "downstream.json")
    summary = evaluate_stage.run(params, tmp_path / "downstream", out_dir=tmp_path / "eval",
                                 report_dir=tmp_path / "report",
                                 metrics_path=tmp_path / "metrics" / "eval.json")
    details = json.loads((tmp_path / "metrics" / "details" / "eval.json").read_text())
    got = details["mine"]["feature_norm"]["random"]
    assert got["norm"] > 0 and got["train_clips"] + got["test_clips"] == 10
    assert "mine feature_norm norm: random" in summary
    assert "| mine | feature_norm | norm |" in (tmp_path / "report" / "summary.md").read_text()
    # no fine-tuning asked for: its declared output is there all the same (DVC checks it)
    assert (tmp_path / "eval" / "finetune").is_dir()
    # a floor is kept out of the headline; a trained encoder's figure is in it
    assert "mine" not in json.loads((tmp_path / "metrics" / "eval.json").read_text())
    figures = {"mine": {"feature_norm": {"random": {"norm": 1.0}, "pretrain": {"norm": 2.5}}}}
    assert headline_metrics(figures) == {"mine": {"feature_norm_norm": {"pretrain": 2.5}}}
    assert "feature_norm" in summary_table(figures)


def test_headlines_follow_each_protocols_entry():
    figures = {"ssv2": {"linear": {"pretrain": {"top1": 30.0}, "random": {"top1": 20.0}},
                        "v2v": {"pretrain": {"R@1": 40.0}, "random": {"R@1": 35.0}}},
               "msrvtt": {"t2v": {"pretrain": {"R@1": 5.0}, "post_pretrain": {"R@1": 9.0}}},
               "transcripts": {"sort": {"pretrain": {"acc_video": 0.9}},
                               "text_only_sorter": {"pretrain": {"acc": 0.3}}}}
    assert headline_metrics(figures) == {
        "ssv2": {"linear_top1": {"pretrain": 30.0, "gain_over_random": 10.0},
                 "v2v_R1": {"pretrain": 40.0}},
        "msrvtt": {"t2v_R1": {"post_pretrain": 9.0}},
        "transcripts": {"sort_acc_video": {"pretrain": 0.9, "text_only_control": 0.3}}}


def test_a_default_the_set_cannot_take_is_skipped_with_its_reason():
    spec = registry.PROTOCOLS["t2v_finetune"]
    import polars as pl

    from tvts.eval.protocols import SetSplits

    empty = pl.DataFrame({"captions": [[]]}, schema={"captions": pl.List(pl.Utf8)})
    assert spec.unavailable_reason(SetSplits(empty, empty, "test")) == (
        "no captioned clips in the train split")
    captioned = pl.DataFrame({"captions": [["a dog runs"]]})
    assert spec.unavailable_reason(SetSplits(captioned, captioned, "test")) is None


def test_registering_a_name_twice_is_refused(toy_protocol):
    with pytest.raises(ValueError, match="already registered"):
        registry.register_protocol(ProtocolSpec("feature_norm", "x", _feature_norm))
