"""Typed schema of params.yaml and its loading.

Resolution order (later wins): the schema defaults, which *are* the offline demo profile;
``tvts/profiles/<profile>.yaml`` for another profile; then the keys written in params.yaml.
params.yaml therefore holds the profile name and the keys a user sets on purpose, so
switching ``profile`` changes everything the profile defines (a params change DVC sees, so
``dvc exp run -S profile=micro`` works).

Every error names the file, the key path, the bad value and what is allowed.

Modules: `base` (the section base, value types), `data_stages`, `training`, `evaluation` (the
sections, by group of stages), `params` (the whole file), `rules` (checks across sections),
`loader` (profiles, validation, error messages).
"""

from tvts.config.base import (
    DEFAULT_PROFILE,
    PROFILES_DIR,
    VIDEO_SUFFIXES,
    Fraction,
    ParamsError,
    PositiveInt,
)
from tvts.config.data_stages import (
    DOWNSTREAM_FORMATS,
    AsrConfig,
    CorpusConfig,
    DataConfig,
    DedupConfig,
    DemoConfig,
    DemoDownstreamSizes,
    DownstreamConfig,
    DownstreamSource,
    PackConfig,
    S3Config,
    SvoSource,
    ValidateConfig,
    YtTemporalConfig,
)
from tvts.config.evaluation import (
    AttentiveProbeConfig,
    EvaluateConfig,
    FinetuneConfig,
    LinearProbeConfig,
    RetrievalFinetuneConfig,
    SortEvalConfig,
    SvoEvalConfig,
)
from tvts.config.loader import (
    available_profiles,
    deep_merge,
    launched_world,
    load_params,
    process_count,
    resolve,
)
from tvts.config.params import Params
from tvts.config.training import (
    ContrastiveConfig,
    LaunchConfig,
    ModelConfig,
    PostPretrainConfig,
    PretrainConfig,
    SortConfig,
    TextEncoderConfig,
    TrainingConfig,
    VideoEncoderConfig,
)

__all__ = [
    "DEFAULT_PROFILE",
    "DOWNSTREAM_FORMATS",
    "PROFILES_DIR",
    "VIDEO_SUFFIXES",
    "AsrConfig",
    "AttentiveProbeConfig",
    "ContrastiveConfig",
    "CorpusConfig",
    "DataConfig",
    "DedupConfig",
    "DemoConfig",
    "DemoDownstreamSizes",
    "DownstreamConfig",
    "DownstreamSource",
    "EvaluateConfig",
    "FinetuneConfig",
    "Fraction",
    "LaunchConfig",
    "LinearProbeConfig",
    "ModelConfig",
    "PackConfig",
    "Params",
    "ParamsError",
    "PositiveInt",
    "PostPretrainConfig",
    "PretrainConfig",
    "RetrievalFinetuneConfig",
    "S3Config",
    "SortConfig",
    "SortEvalConfig",
    "SvoEvalConfig",
    "SvoSource",
    "TextEncoderConfig",
    "TrainingConfig",
    "ValidateConfig",
    "VideoEncoderConfig",
    "YtTemporalConfig",
    "available_profiles",
    "deep_merge",
    "launched_world",
    "load_params",
    "process_count",
    "resolve",
]
