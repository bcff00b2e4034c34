"""The evaluate stage's sections: frozen probes, fine-tuning recipes, SVO-Probes, transcript
sorting, and which sets, protocols and encoders it runs (names from tvts.eval.registry)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from tvts.config.base import Fraction, PositiveInt, _Section
from tvts.config.data_stages import DOWNSTREAM_FORMATS
from tvts.config.training import TrainingConfig
from tvts.eval.registry import CLASSIFICATION, ENCODERS, set_protocols

# formats a classification fine-tuning recipe can be set per (`directory`: a folder of clips)
FinetuneFormat = Literal[(*(f for f, kind in DOWNSTREAM_FORMATS.items()  # type: ignore[misc]
                            if kind == CLASSIFICATION), "directory")]


class LinearProbeConfig(_Section):
    # the paper's linear probe: SGD with momentum, lr 0.1, batch 384, 100 epochs
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 384
    lr: Annotated[float, Field(gt=0.0)] = 0.1
    momentum: Fraction = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    # the pooled feature: the encoder's [CLS] output, or the mean of its patch tokens
    pooling: Literal["cls", "mean"] = "cls"


class AttentiveProbeConfig(_Section):
    # V-JEPA's frozen evaluation: one cross-attention layer with a learned query, then linear
    epochs: PositiveInt = 50
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.05
    heads: PositiveInt = 4


class SortEvalConfig(_Section):
    # transcript sorting (the paper's table 13) on the corpus' held-out videos
    enabled: bool = True
    clips_per_video: PositiveInt = 8
    # The text-only control: a sorter trained as pretraining trains its own, without the
    # video; what it scores on held-out videos is what the transcripts give away.
    text_only_control: bool = True
    # it trains on at most this many training videos (a seeded subset); null: all
    text_only_videos: PositiveInt | None = 5000


class FinetuneConfig(TrainingConfig):
    """Fine-tuning for classification, VideoMAE's recipe (the paper's table 9): AdamW, lr
    scaled by batch (`lr` is the rate at batch 256), layer-wise lr decay, warmup + cosine,
    drop path, label smoothing, mixup/cutmix and RandAugment (timm's). The demo's values are
    minutes on 2 cores; the paper profile sets the paper's."""

    # the demo: 24 epochs of 135 clips, about 45 s per encoder on 2 cores
    epochs: PositiveInt = 24
    # SSV2 trains 50 epochs, the others 100 in the paper: per-format overrides (a set's
    # format: its release format; a demo set's is its name)
    epochs_per_format: dict[FinetuneFormat, PositiveInt] = {}
    batch_size: PositiveInt = 16
    # at batch 256: the rate used is lr x batch/256 (the paper: 1e-3 at 384; the demo's
    # tiny encoder learns nothing at that rate in a few hundred steps: docs/stages/evaluate.md)
    lr: Annotated[float, Field(gt=0.0)] = 1e-2
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.05
    schedule: Literal["step", "cosine"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 2.0
    # lr of block i (of depth d) = lr x layer_decay^(d - i); embeddings d + 1 below the head
    layer_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.75
    drop_path: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    head_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    head_init_scale: Annotated[float, Field(gt=0.0)] = 0.001
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    # Beta(alpha, alpha) of mixup and of CutMix; 0: off. The paper's (VideoMAE's) 0.8 and 1.0
    # are in the paper profile; on the demo's 135 clips they keep the loss at chance
    # (docs/stages/evaluate.md)
    mixup: Annotated[float, Field(ge=0.0)] = 0.0
    cutmix: Annotated[float, Field(ge=0.0)] = 0.0
    mixup_prob: Fraction = 1.0
    mixup_switch_prob: Fraction = 0.5
    # timm's RandAugment config string (VideoMAE: rand-m7-n4-mstd0.5-inc1, the paper
    # profile's); null: off. One draw of ops and magnitudes per clip, for all its frames.
    randaugment: str | None = "rand-m3-n2-mstd0.5-inc1"
    clip_grad_norm: Annotated[float, Field(gt=0.0)] | None = None
    loader_workers: Annotated[int, Field(ge=0)] = 2
    checkpoint_every_steps: PositiveInt = 500


class RetrievalFinetuneConfig(TrainingConfig):
    """Text-to-video retrieval after contrastive fine-tuning of the whole model (video and
    text encoders, projections) on a captioned set's train split; every (clip, caption) pair
    of the split is an item of an epoch."""

    epochs: PositiveInt = 4
    batch_size: PositiveInt = 16
    lr: Annotated[float, Field(gt=0.0)] = 5e-5
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.01
    schedule: Literal["step", "cosine"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 0.5
    loader_workers: Annotated[int, Field(ge=0)] = 2
    checkpoint_every_steps: PositiveInt = 500


class SvoEvalConfig(_Section):
    # SVO-Probes (the paper's table 11): an image is called positive for a sentence when
    # their cosine similarity in the contrastive space exceeds a threshold
    thresholds: list[Annotated[float, Field(ge=-1.0, le=1.0)]] = [0.2, 0.25, 0.3]
    batch_size: PositiveInt = 64


class EvaluateConfig(_Section):
    recall_at: list[PositiveInt] = [1, 5, 10, 50]
    # exported encoders to evaluate; floors of the same architecture, so they are in every
    # run: `random` (seeded untrained video encoder) and `init` (pretraining's start point,
    # model.video.init loaded: the paper's Mscratch; left out where it is `random` again)
    # (names: tvts.eval.registry.ENCODERS)
    encoders: Annotated[list[str], Field(min_length=1)] = ["pretrain", "post_pretrain",
                                                            "random"]
    # set (a name in downstream.sets) -> protocols: linear, attentive, v2v, t2v. null: every
    # set of downstream.sets with the protocols its kind takes (classification sets: linear,
    # attentive, v2v, finetune; captioned sets: t2v, and t2v_finetune where the set has a
    # train split)
    # finetune: the encoder fine-tuned for classification; t2v_finetune: text-to-video after
    # contrastive fine-tuning on the set's train split
    # (names: tvts.eval.registry.PROTOCOLS)
    tasks: dict[str, list[str]] | None = None
    # test views per clip (temporal x spatial), averaged: 2 x 3 (VideoMAE's SSV2 protocol);
    # sets of the k400 format use 5 x 3; per-set overrides in `views`
    test_views: tuple[PositiveInt, PositiveInt] = (2, 3)
    views: dict[str, tuple[PositiveInt, PositiveInt]] = {}
    # patch tokens kept for the attentive probe: each slice's grid average-pooled to at most
    # this many patches a side (bounds the feature cache at paper scale)
    token_grid: PositiveInt = 4
    # frames per clip for text-to-video retrieval and its fine-tuning (the paper: 4, after
    # Frozen-in-Time; classification keeps data.num_frames, 16 in the paper); null: the same
    # as data.num_frames
    retrieval_frames: PositiveInt | None = None
    batch_size: PositiveInt = 16  # clips per forward pass during extraction
    # captions are longer than transcript windows (DiDeMo's are paragraphs)
    max_caption_tokens: PositiveInt = 64
    loader_workers: Annotated[int, Field(ge=0)] = 2
    device: str = "auto"
    num_shards: PositiveInt = 8
    linear: LinearProbeConfig = LinearProbeConfig()
    attentive: AttentiveProbeConfig = AttentiveProbeConfig()
    sort: SortEvalConfig = SortEvalConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    retrieval_finetune: RetrievalFinetuneConfig = RetrievalFinetuneConfig()
    svo: SvoEvalConfig = SvoEvalConfig()
    # validation clips shown in the top-5 figure (the paper's figure 4), per classification set
    figure_clips: Annotated[int, Field(ge=0)] = 4

    @field_validator("encoders")
    @classmethod
    def _known_encoders(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if n not in ENCODERS]
        if bad:
            raise ValueError(f"unknown encoder(s) {', '.join(map(repr, bad))}; allowed: "
                             f"{', '.join(ENCODERS)}")
        return v

    @field_validator("tasks")
    @classmethod
    def _known_protocols(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        allowed = set_protocols()
        for set_name, protocols in (v or {}).items():
            bad = [p for p in protocols if p not in allowed]
            if bad:
                raise ValueError(f"set {set_name!r}: unknown protocol(s) "
                                 f"{', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}")
        return v
