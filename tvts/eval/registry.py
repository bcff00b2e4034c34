"""The evaluation protocols and the encoders they compare, each named once.

A protocol's entry says what it reads (the set's train features or only its test clips), which
sets take it by default, the figure it is known by, which encoder the paper reports it for and
how it runs. The params schema (`evaluate.tasks`, `evaluate.encoders`), its defaults, the
evaluate stage's loop and the headline tables are derived from these tables, so a new protocol
is one `register_protocol` call and its runner (tests register a toy one this way).

This module stays free of torch so that the params schema can read it: a built-in runner is
named by its import path and loaded on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# the kinds of downstream set; a set's kind follows from its release format
CLASSIFICATION, CAPTIONED = "classification", "captioned"


@dataclass(frozen=True)
class ProtocolSpec:
    """One evaluation protocol.

    `runner`: a callable taking the evaluate stage's `SetRun` and returning a
    `ProtocolResult` (tvts.eval.runners), or its "module:function" import path; None for the
    corpus-level tests the stage runs itself (SVO-Probes, transcript sorting), which are listed
    for their figures only and are not set tasks.
    """

    name: str
    main_figure: str  # the metric it is known by (headlines, the one-line summary)
    runner: str | Callable[..., Any] | None = None
    set_kinds: tuple[str, ...] = ()  # the set kinds that take it when evaluate.tasks is null
    train_features: bool = False  # reads the frozen features of the set's train clips too
    retrieval: bool = False  # text-to-video: clips read at evaluate.retrieval_frames
    # the encoder whose figure the headline keeps (the paper reports classification and
    # sorting of the pretrained model, retrieval after post-pretraining)
    headline_encoder: str = "pretrain"
    headline: bool = True  # in `dvc metrics show` at all
    gain_over_random: bool = False  # the headline carries the gain over the random floor
    # (protocol, headline key): a control whose main figure the headline puts beside this
    # one's (transcript sorting beside its text-only control: a re-opened shortcut shows)
    control: tuple[str, str] | None = None
    # a defaulted task the set cannot take (e.g. no captioned train clips): the reason, which
    # the stage records instead of failing; an explicitly requested task runs and fails loudly
    unavailable: str | Callable[..., str | None] | None = None

    def run(self, job: Any) -> Any:
        return resolve_callable(self.runner, f"protocol {self.name!r}")(job)

    def unavailable_reason(self, splits: Any) -> str | None:
        if self.unavailable is None:
            return None
        return resolve_callable(self.unavailable, f"protocol {self.name!r}")(splits)


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder the evaluate stage can compare: an exported model of a training stage
    (`stage`: its folder is that stage's model folder) or a floor of the same architecture
    built from params (`build`: a callable or its import path, Params -> TVTSModel)."""

    name: str
    stage: str | None = None
    build: str | Callable[..., Any] | None = None
    floor: bool = False  # a reference, kept out of the headline metrics
    # built only when it is another model than the floor named here (init == random when
    # model.video.init is unset)
    same_as_unless: tuple[str, str | Callable[..., bool]] | None = None


PROTOCOLS: dict[str, ProtocolSpec] = {}
ENCODERS: dict[str, EncoderSpec] = {}


def resolve_callable(target: Any, what: str = "") -> Callable[..., Any]:
    """A callable, or the one a "module:function" path names (imported on first use)."""
    if callable(target):
        return target
    if not isinstance(target, str):
        raise TypeError(f"{what or 'registry entry'}: nothing to call ({target!r})")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_protocol(spec: ProtocolSpec, replace: bool = False) -> ProtocolSpec:
    if spec.name in PROTOCOLS and not replace:
        raise ValueError(f"protocol {spec.name!r} is already registered")
    PROTOCOLS[spec.name] = spec
    return spec


def unregister_protocol(name: str) -> None:
    PROTOCOLS.pop(name, None)


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    if spec.name in ENCODERS:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    ENCODERS[spec.name] = spec
    return spec


def set_protocols() -> list[str]:
    """The protocols a set can be given in evaluate.tasks."""
    return [n for n, s in PROTOCOLS.items() if s.runner is not None]


def default_protocols(kind: str) -> list[str]:
    """The protocols a set of this kind gets when evaluate.tasks is null, in registry order."""
    return [n for n, s in PROTOCOLS.items() if kind in s.set_kinds]


def floor_encoders() -> list[str]:
    return [n for n, s in ENCODERS.items() if s.floor]


_RUNNERS = "tvts.eval.runners"
for _spec in (
    ProtocolSpec("linear", "top1", f"{_RUNNERS}:linear_probe", (CLASSIFICATION,),
                 train_features=True, gain_over_random=True),
    ProtocolSpec("attentive", "top1", f"{_RUNNERS}:attentive_probe", (CLASSIFICATION,),
                 train_features=True, gain_over_random=True),
    ProtocolSpec("v2v", "R@1", f"{_RUNNERS}:video_to_video", (CLASSIFICATION,),
                 train_features=True),
    ProtocolSpec("t2v", "R@1", f"{_RUNNERS}:text_to_video", (CAPTIONED,), retrieval=True,
                 headline_encoder="post_pretrain"),
    ProtocolSpec("finetune", "top1", f"{_RUNNERS}:finetune", (CLASSIFICATION,)),
    ProtocolSpec("t2v_finetune", "R@1", f"{_RUNNERS}:t2v_finetune", (CAPTIONED,),
                 retrieval=True, headline_encoder="post_pretrain",
                 unavailable=f"{_RUNNERS}:no_captioned_train"),
    # corpus-level tests (not set tasks): listed for their figures
    ProtocolSpec("svo", "verb_pair_acc", headline_encoder="post_pretrain"),
    ProtocolSpec("sort", "acc_video", control=("text_only_sorter", "text_only_control")),
    ProtocolSpec("text_only_sorter", "acc", headline=False),
):
    register_protocol(_spec)

_ENCODERS = "tvts.eval.encoders"
for _enc in (
    EncoderSpec("pretrain", stage="pretrain"),
    EncoderSpec("post_pretrain", stage="post_pretrain"),
    EncoderSpec("random", build=f"{_ENCODERS}:random_model", floor=True),
    EncoderSpec("init", build=f"{_ENCODERS}:init_model", floor=True,
                same_as_unless=("random", f"{_ENCODERS}:init_differs")),
):
    register_encoder(_enc)
