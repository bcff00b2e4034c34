"""How each built-in protocol of the registry runs on one downstream set: the evaluate stage
hands a `SetRun` (the set's splits, its cached features, the encoders) to the protocol's
runner and gets a `ProtocolResult` back; files a person reads (confusion matrices, figures)
are the stage's to write from what the result carries."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tvts.config import Params
from tvts.eval.features import ClipFeatures, ViewSpec
from tvts.eval.finetune import FinetuneResult
from tvts.eval.probes import ProbeSettings
from tvts.eval.protocols import SetSplits, classify
from tvts.eval.protocols import text_to_video as zero_shot_t2v
from tvts.eval.protocols import video_to_video as zero_shot_v2v
from tvts.eval.trained_protocols import (
    finetune_set,
    has_captioned_train,
    rounded,
    t2v_finetune_set,
)
from tvts.models.tvts_model import TVTSModel
from tvts.train.distributed import Dist

Progress = Callable[[int, str], AbstractContextManager[Any]]  # (total, what) -> bar.update


@dataclass
class SetRun:
    """What a protocol may read of one set in one evaluate run."""

    params: Params
    set_name: str
    splits: SetSplits
    features: dict[str, dict[str, ClipFeatures]]  # part (test, train) -> encoder -> features
    test_spec: ViewSpec  # the views the test clips were read with
    models: dict[str, TVTSModel]
    tokenizer: Any
    device: torch.device
    work_dir: Path  # the set's folder for trained protocols' runs (data/eval/finetune/<set>)
    features_dir: Path  # the set's feature cache (data/eval/features/<set>)
    dist: Dist
    progress: Progress


@dataclass
class ProtocolResult:
    metrics: dict[str, dict[str, Any]]  # encoder -> figures
    failed: dict[str, str] = field(default_factory=dict)  # clip id -> why it was left out
    # encoder -> (actual, predicted) labels of the test clips: confusion matrices
    predictions: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    tuned: dict[str, FinetuneResult] = field(default_factory=dict)  # per-class scores


def _probe(kind: str, job: SetRun, confusion: bool) -> ProtocolResult:
    cfg = job.params.evaluate
    section = getattr(cfg, kind)
    settings = ProbeSettings(section.epochs, section.batch_size, section.lr,
                             section.weight_decay, seed=job.params.seed,
                             **({"momentum": section.momentum} if kind == "linear"
                                else {"heads": section.heads}))
    out = ProtocolResult({})
    for name in job.models:
        test, train = job.features["test"][name], job.features["train"][name]
        with job.progress(settings.epochs, f"{job.set_name} {kind} probe ({name})") as update:
            res = classify(kind, train, job.splits.train, test, job.splits.test, settings,
                           cfg.linear.pooling, update)
        out.metrics[name] = rounded(res.metrics)
        if confusion:
            out.predictions[name] = (res.actual, res.predicted)
    return out


def linear_probe(job: SetRun) -> ProtocolResult:
    return _probe("linear", job, confusion=True)


def attentive_probe(job: SetRun) -> ProtocolResult:
    return _probe("attentive", job, confusion=False)  # the confusion matrices: the linear's


def video_to_video(job: SetRun) -> ProtocolResult:
    cfg = job.params.evaluate
    ks = tuple(k for k in cfg.recall_at if k <= 10) or tuple(cfg.recall_at)  # R@1/5/10
    return ProtocolResult({name: rounded(zero_shot_v2v(
        job.features["train"][name], job.splits.train, job.features["test"][name],
        job.splits.test, ks, cfg.linear.pooling)) for name in job.models})


def text_to_video(job: SetRun) -> ProtocolResult:
    cfg = job.params.evaluate
    return ProtocolResult({name: rounded(zero_shot_t2v(
        model, job.tokenizer, job.features["test"][name], job.splits.test,
        tuple(cfg.recall_at), cfg.max_caption_tokens, job.device))
        for name, model in job.models.items()})


def finetune(job: SetRun) -> ProtocolResult:
    tuned = finetune_set(job.params, job.set_name, job.splits, job.test_spec, job.models,
                         job.work_dir, job.dist)
    return ProtocolResult({n: rounded(r.metrics) for n, r in tuned.items()},
                          failed={k: r for t in tuned.values() for k, r in t.failed},
                          tuned=tuned)


def t2v_finetune(job: SetRun) -> ProtocolResult:
    metrics, failed = t2v_finetune_set(
        job.params, job.set_name, job.splits, job.test_spec, job.models, job.tokenizer,
        job.work_dir, job.features_dir / f"test-{job.test_spec.tag()}", job.dist)
    return ProtocolResult(metrics, failed=failed)


def no_captioned_train(splits: SetSplits) -> str | None:
    return None if has_captioned_train(splits) else "no captioned clips in the train split"
