"""Where each stage reads and writes, relative to the project root: the one place the stages
(their default paths), the CLI (which stage makes a missing input, which outputs a killed
write can leave temporary files in) and the Prefect flow (its report links, the fan-out
stages) take them from. `tests/test_paths.py` checks that dvc.yaml's deps and outputs agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ---- per stage, what it writes
SOURCES = Path("data/sources")
SOURCES_CORPUS = SOURCES / "corpus.json"
SOURCES_DOWNSTREAM = SOURCES / "downstream.json"

CORPUS = Path("data/corpus")
CORPUS_VIDEOS = CORPUS / "videos.parquet"
CORPUS_SUBTITLES = CORPUS / "subtitles.parquet"
LEAK_TRUTH = CORPUS / "leak_truth.parquet"  # the demo's planted leaks

ASR = Path("data/asr")
WORDS = ASR / "words.parquet"
ASR_QUARANTINE = ASR / "quarantine.parquet"
ASR_SHARDS = ASR / "shards"
VALID_VIDEOS = ASR / "valid.parquet"
VALIDATION_QUARANTINE = ASR / "validation_quarantine.parquet"
VALIDATION_REPORT = Path("reports/asr_validation")

DOWNSTREAM = Path("data/downstream")  # <set>.parquet manifests, <SVO_TABLE>.parquet
SVO_TABLE = "svo_probes"  # the SVO-Probes table's name (a reserved set name)

DEDUP = Path("data/dedup")
PRETRAIN_VIDEOS = DEDUP / "videos.parquet"  # validated, leaks removed: what pretraining reads
LEAKAGE_REPORT = Path("reports/leakage")

PACK = Path("data/pack")
PACK_INDEX = PACK / "index.parquet"
PACK_SHARDS = PACK / "shards"

MODELS = Path("models")
PRETRAIN_MODEL = MODELS / "pretrain"
POST_PRETRAIN_MODEL = MODELS / "post_pretrain"
CHECKPOINTS = "checkpoints"  # under a model folder
BEST_CHECKPOINT = "best.pt"  # the checkpoint the monitor chose (tvts.train.checkpoint)
LIVE = Path("dvclive")
# an export's files (tvts.train.export): the whole model's weights, its settings
EXPORT_WEIGHTS, EXPORT_INFO = "tvts.safetensors", "tvts.json"

EVAL = Path("data/eval")
EVAL_REPORT = Path("reports/eval")
EVAL_SUMMARY = EVAL_REPORT / "summary.md"
EVAL_FIGURES = EVAL_REPORT / "figures"
EVAL_CONFUSION = EVAL_REPORT / "confusion"

REPORTS_INDEX = Path("reports/index.html")
# `tvts ablate`: one folder per grid (its table, every cell's figures); no stage's output
ABLATIONS_REPORTS = Path("reports/ablations")
METRICS = Path("metrics")


def metrics_of(stage: str) -> Path:
    """The headline metrics file of a stage (`evaluate` keeps its historical name)."""
    return METRICS / f"{'eval' if stage == 'evaluate' else stage}.json"


def details_of(stage: str) -> Path:
    """Every figure a stage recorded, beside its headline metrics."""
    return METRICS / "details" / metrics_of(stage).name


def model_dir(stage: str) -> Path:
    """A training stage's model folder (checkpoints, the export)."""
    return MODELS / stage


def live_dir(stage: str) -> Path:
    return LIVE / stage


def report_dir(stage: str) -> Path:
    return Path("reports") / stage


@dataclass(frozen=True)
class StagePaths:
    inputs: tuple[Path, ...]  # other stages' outputs it reads (dvc.yaml's data deps)
    outputs: tuple[Path, ...]  # outs, metrics and plots
    sharded: bool = False  # per-video work that splits by shard (`--shards i/n`)


def _training(stage: str, inputs: tuple[Path, ...]) -> StagePaths:
    return StagePaths(inputs, (model_dir(stage), details_of(stage),
                               live_dir(stage) / "metrics.json", report_dir(stage),
                               metrics_of(stage), live_dir(stage) / "plots" / "metrics"))


# dvc.yaml's stages in pipeline order; paths a stage takes from params (dedup.decisions,
# post_pretrain.images / clips) are not listed
STAGES: dict[str, StagePaths] = {
    "sources": StagePaths((), (SOURCES_CORPUS, SOURCES_DOWNSTREAM)),
    "corpus": StagePaths((SOURCES_CORPUS,), (CORPUS, details_of("corpus"),
                                             metrics_of("corpus"))),
    "asr": StagePaths((CORPUS_VIDEOS, CORPUS_SUBTITLES),
                      (WORDS, ASR_QUARANTINE, ASR_SHARDS, details_of("asr"), metrics_of("asr")),
                      sharded=True),
    "validate": StagePaths((CORPUS_VIDEOS, WORDS, ASR_QUARANTINE),
                           (VALID_VIDEOS, VALIDATION_QUARANTINE, VALIDATION_REPORT,
                            details_of("validate"), metrics_of("validate"))),
    "downstream": StagePaths((CORPUS, SOURCES_DOWNSTREAM),
                             (DOWNSTREAM, details_of("downstream"), metrics_of("downstream"))),
    "dedup": StagePaths((VALID_VIDEOS, DOWNSTREAM, LEAK_TRUTH),
                        (DEDUP / "leaks.parquet", PRETRAIN_VIDEOS, DEDUP / "quarantine.parquet",
                         DEDUP / "features", LEAKAGE_REPORT, details_of("dedup"),
                         metrics_of("dedup")), sharded=True),
    "pack": StagePaths((PRETRAIN_VIDEOS,),
                       (PACK_INDEX, PACK / "quarantine.parquet", PACK_SHARDS, details_of("pack"),
                        metrics_of("pack")), sharded=True),
    "pretrain": _training("pretrain", (PRETRAIN_VIDEOS, WORDS, PACK_INDEX)),
    "post_pretrain": _training("post_pretrain",
                               (PRETRAIN_MODEL / CHECKPOINTS / BEST_CHECKPOINT,)),
    "evaluate": StagePaths((PRETRAIN_MODEL / EXPORT_WEIGHTS,
                            POST_PRETRAIN_MODEL / EXPORT_WEIGHTS, DOWNSTREAM, PRETRAIN_VIDEOS,
                            WORDS, PACK_INDEX),
                           (EVAL / "quarantine.parquet", EVAL / "features", EVAL / "finetune",
                            EVAL_SUMMARY, EVAL_REPORT / "params.resolved.yaml", EVAL_FIGURES,
                            details_of("evaluate"), metrics_of("evaluate"), EVAL_CONFUSION),
                           sharded=True),
    "reports": StagePaths((), (REPORTS_INDEX,)),
}
SHARDED_STAGES = tuple(name for name, s in STAGES.items() if s.sharded)


def producer_of(path: str | Path) -> str | None:
    """The stage whose outputs hold `path` (relative to the project root), if any."""
    target = Path(path)
    for name, stage in STAGES.items():
        if any(target == out or out in target.parents for out in stage.outputs):
            return name
    return None
