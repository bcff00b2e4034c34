"""`Params`: the whole params.yaml, its sections and the rules across them."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import Field, ValidationInfo, model_validator

from tvts.config import rules
from tvts.config.base import DEFAULT_PROFILE, ParamsError, _Section
from tvts.config.data_stages import (
    DOWNSTREAM_FORMATS,
    AsrConfig,
    CorpusConfig,
    DataConfig,
    DedupConfig,
    DownstreamConfig,
    DownstreamSource,
    PackConfig,
    SvoSource,
    ValidateConfig,
)
from tvts.config.evaluation import EvaluateConfig
from tvts.config.training import (
    ContrastiveConfig,
    LaunchConfig,
    ModelConfig,
    PostPretrainConfig,
    PretrainConfig,
    SortConfig,
)
from tvts.eval.registry import CLASSIFICATION, default_protocols


class EvalTask(NamedTuple):
    protocol: str
    requested: bool  # named in evaluate.tasks (else a default of the set's kind)


class Params(_Section):
    profile: str = DEFAULT_PROFILE
    seed: int = 0
    corpus: CorpusConfig = CorpusConfig()
    asr: AsrConfig = AsrConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    downstream: DownstreamConfig = DownstreamConfig()
    dedup: DedupConfig = DedupConfig()
    data: DataConfig = DataConfig()
    pack: PackConfig = PackConfig()
    model: ModelConfig = ModelConfig()
    sort: SortConfig = SortConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()
    pretrain: PretrainConfig = PretrainConfig()
    post_pretrain: PostPretrainConfig = PostPretrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    launch: LaunchConfig = LaunchConfig()

    @model_validator(mode="after")
    def _cross_section_rules(self, info: ValidationInfo) -> Params:
        rules.tasks_name_sets(self)
        rules.shapes_fit(self)
        rules.segments_fit(self)
        # the processes the batches split over: the running launch's (WORLD_SIZE), a layout
        # to check (`tvts params check --world-size`), else the one launch asks for
        world = (info.context or {}).get("world_size") or self.launch.planned_world() or 1
        rules.batches_split(self, int(world))
        return self

    @property
    def train_seed(self) -> int:
        """Pretraining's seed: `pretrain.seed`, else the top-level one."""
        return self.seed if self.pretrain.seed is None else self.pretrain.seed

    def check_video_init(self) -> None:
        """The paper starts from ImageMAE-Base: its profile does not train from random weights
        unless told to (`model.video.init: scratch`)."""
        if self.profile == "paper" and self.model.video.init is None:
            raise ParamsError(
                "model.video.init is not set, and the paper profile starts from ImageMAE-Base: "
                "set it to the official MAE ViT-B/16 checkpoint (mae_pretrain_vit_base.pth from "
                "github.com/facebookresearch/mae, or a timm ViT-B/16 .safetensors), or to "
                "`scratch` to train from random weights on purpose")

    def svo_source(self) -> Literal["demo"] | SvoSource | None:
        """downstream.svo with `auto` resolved: the demo's probes only make sense beside the
        demo corpus, so a user's own corpus runs no SVO test unless one is named."""
        svo = self.downstream.svo
        if svo == "auto":
            return "demo" if self.corpus.source == "demo" else None
        return svo

    def set_format(self, name: str) -> str:
        """A downstream set's format: its release's, the demo set's name, or `directory`."""
        source = self.downstream.sets[name]
        if isinstance(source, DownstreamSource):
            return source.format
        return name if source == "demo" else "directory"

    def set_kind(self, name: str) -> str:
        """`classification` (labelled clips) or `captioned`, from the set's format."""
        return DOWNSTREAM_FORMATS.get(self.set_format(name), CLASSIFICATION)

    def eval_plan(self) -> dict[str, list[EvalTask]]:
        """evaluate.tasks, each task requested; or (null) each downstream set with the
        protocols its kind takes by default (tvts.eval.registry), which the stage skips with
        a reason where the set cannot take one rather than failing."""
        if self.evaluate.tasks is not None:
            return {k: [EvalTask(p, True) for p in v] for k, v in self.evaluate.tasks.items()}
        return {name: [EvalTask(p, False) for p in default_protocols(self.set_kind(name))]
                for name in self.downstream.sets}

    def eval_tasks(self) -> dict[str, list[str]]:
        """Set -> the protocols the evaluate stage runs on it (see eval_plan)."""
        return {k: [t.protocol for t in v] for k, v in self.eval_plan().items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the params.yaml spelling of every key."""
        return self.model_dump(by_alias=True, mode="json")
