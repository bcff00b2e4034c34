"""`evaluate` stage: the exported encoders (and a random-weights floor) on the downstream sets
by frozen-encoder protocols, and transcript sorting on the corpus' held-out videos ->
metrics/eval.json (set -> protocol -> encoder -> metric), linear-probe confusion matrices for
`dvc plots`, cached feature shards in data/eval/features."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tvts import paths
from tvts.config import DownstreamSource, Params
from tvts.data.tvts_dataset import (
    CorpusSplits,
    SampleSpec,
    load_entries,
    split_entries,
    split_feasible,
)
from tvts.errors import UserError
from tvts.eval.corpus_sort import sort_loader, text_only_control
from tvts.eval.encoders import load_exported
from tvts.eval.features import (
    ClipFeatures,
    ClipItem,
    FrozenEncoder,
    ViewSpec,
    extract,
    weights_fingerprint,
)
from tvts.eval.figures import top5_clips
from tvts.eval.finetune import FinetuneResult
from tvts.eval.protocols import SetSplits, set_splits
from tvts.eval.registry import ENCODERS, PROTOCOLS, resolve_callable
from tvts.eval.runners import SetRun
from tvts.eval.sorting import sort_accuracies
from tvts.eval.summary import headline, headline_metrics, summary_table
from tvts.eval.trained_protocols import rounded, svo_test
from tvts.metrics import degeneracy
from tvts.models.text_encoder import load_tokenizer
from tvts.models.tvts_model import TVTSModel
from tvts.reports.plots import confusion_rows, confusion_spec, top5_spec, write_png
from tvts.stages.common import (
    PACK_DIR,
    packed_frames,
    progress_bar,
    record_params,
    split_packed,
    write_json,
    write_metrics,
)
from tvts.storage import atomic_write_text, file_stamp
from tvts.tables import frame, read_table, write_table
from tvts.train.distributed import Dist
from tvts.video.packed import PackedIndex

DOWNSTREAM = paths.DOWNSTREAM
VIDEOS = paths.PRETRAIN_VIDEOS
WORDS = paths.WORDS
OUT_DIR = paths.EVAL
REPORT = paths.EVAL_REPORT
METRICS = paths.metrics_of("evaluate")
STAGE = "evaluate"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _frames(params: Params, protocols: list[str]) -> int:
    """Frames per clip of a set: evaluate.retrieval_frames for a set evaluated by retrieval
    only (the paper's 4), data.num_frames otherwise (a set that mixes classification and
    retrieval protocols is read once, at the classification count)."""
    if all(PROTOCOLS[p].retrieval for p in protocols) and params.evaluate.retrieval_frames:
        return params.evaluate.retrieval_frames
    return params.data.num_frames


def _views(params: Params, set_name: str) -> tuple[int, int]:
    cfg = params.evaluate
    if set_name in cfg.views:
        return cfg.views[set_name]
    source = params.downstream.sets.get(set_name)
    if isinstance(source, DownstreamSource) and source.format == "k400":
        return (5, 3)  # VideoMAE's Kinetics test: 5 temporal x 3 spatial
    return cfg.test_views


def _models(params: Params, model_dirs: dict[str, Path] | None, device: torch.device
            ) -> dict[str, TVTSModel]:
    """The encoders of evaluate.encoders (tvts.eval.registry.ENCODERS): a training stage's
    export, or a floor built from params; a floor that would be another floor again (`init`
    without model.video.init is `random`) is left out."""
    wanted = params.evaluate.encoders
    out = {}
    for name in wanted:
        spec = ENCODERS[name]
        if spec.same_as_unless is not None:
            other, differs = spec.same_as_unless
            if other in wanted and not resolve_callable(differs)(params):
                continue
        if spec.stage is not None:
            folder = (model_dirs or {}).get(name, paths.model_dir(spec.stage))
            out[name] = load_exported(params, folder).to(device)
        else:
            out[name] = resolve_callable(spec.build)(params).to(device)
    return out


def _corpus_split(params: Params, videos_path: Path, words_path: Path,
                  packed: PackedIndex | None) -> CorpusSplits:
    """The pretrain stage's training, validation and test videos."""
    videos = read_table(videos_path, "videos")
    spec = SampleSpec.from_params(params, False, 0.0)
    usable, _ = split_feasible(load_entries(videos, read_table(words_path, "words")), spec)
    return split_entries(split_packed(usable, packed)[0], videos)


def _quarantined(set_name: str, reasons: dict[str, str], already: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Quarantine rows for clips a protocol could not decode, once each."""
    seen = {r["video_id"] for r in already}
    return [{"video_id": f"{set_name}/{k}", "uri": None, "stage": STAGE, "reason": r}
            for k, r in sorted(reasons.items()) if f"{set_name}/{k}" not in seen]


@contextmanager
def _progress(total: int, desc: str) -> Iterator[Callable[[int], Any]]:
    with progress_bar(total, desc) as bar:
        yield bar.update


def _set_features(params: Params, set_name: str, protocols: list[str], splits: SetSplits,
                  encoders: list[FrozenEncoder], features_dir: Path, device: torch.device,
                  shards: tuple[int, int] | None
                  ) -> tuple[dict[str, dict[str, ClipFeatures]], ViewSpec, list[str],
                             list[tuple[str, str]]]:
    """The frozen features of the set's test clips (and of its train clips where a protocol
    reads them), cached by shard: (part -> encoder -> features, the test views, warnings
    about degenerate features, clips that did not decode)."""
    cfg, d = params.evaluate, params.data
    tv, sv = _views(params, set_name)
    frames = _frames(params, protocols)
    test_spec = ViewSpec(frames, d.frame_size, d.resize_short, d.decoder, tv, sv, cfg.token_grid)
    parts = {"test": (splits.test, test_spec)}
    if any(PROTOCOLS[p].train_features for p in protocols):
        parts["train"] = (splits.train, ViewSpec(frames, d.frame_size, d.resize_short,
                                                 d.decoder, 1, 1, cfg.token_grid))
    feats, warnings, failed = {}, [], []
    for part, (rows, spec) in parts.items():
        items = [ClipItem(i, u, file_stamp(u))
                 for i, u in rows.select("downstream_id", "uri").iter_rows()]
        if not items:
            raise UserError(f"downstream set {set_name!r} has no {part} clips for "
                            f"{', '.join(protocols)}")
        with progress_bar(len(items), f"{set_name} {part} features ({spec.tag()} views)"
                          ) as bar:
            res = extract(items, encoders, spec, features_dir / f"{part}-{spec.tag()}",
                          cfg.num_shards, cfg.batch_size, cfg.loader_workers, device,
                          bar.update, shards)
        feats[part] = res.features
        if part == "test":
            warnings += [w for name, f in res.features.items() if (w := degeneracy(
                getattr(f, cfg.linear.pooling).mean(1), f"{set_name} {name}"))]
        failed += next(iter(res.features.values())).failed
    return feats, test_spec, warnings, failed


def _write_confusion(set_name: str, predictions: dict[str, tuple[list[str], list[str]]],
                     confusion_dir: Path, figures_dir: Path) -> None:
    """The linear probe's confusion matrix per encoder: `dvc plots` data and a PNG."""
    for name, (actual, predicted) in predictions.items():
        write_json(confusion_dir / f"{set_name}-{name}.json",
                   confusion_rows(actual, predicted))
        rows = [{"actual": a, "predicted": p} for a, p in zip(actual, predicted, strict=True)]
        write_png(confusion_spec(rows, f"{set_name}: linear probe on {name} features "
                                       "(test clips)"),
                  figures_dir / f"confusion-{set_name}-{name}.png")


def run(params: Params, downstream_dir: Path = DOWNSTREAM,
        models: dict[str, Path] | None = None, videos_path: Path = VIDEOS,
        words_path: Path = WORDS, out_dir: Path = OUT_DIR, report_dir: Path = REPORT,
        metrics_path: Path = METRICS, shards: tuple[int, int] | None = None,
        pack_dir: Path = PACK_DIR) -> str:
    """The whole stage, or with `shards` = (i, n) only the feature shards s with s % n == i
    of every set (one part of a fan-out; the whole stage afterwards reuses them). `models`:
    an exported encoder's folder by name (default: its training stage's model folder)."""
    t0 = time.perf_counter()
    cfg = params.evaluate
    device = _device(cfg.device)
    nets = _models(params, models, device)
    single = Dist(0, 1, 0, device)  # fine-tuning runs in this process (docs/scaling.md)
    tuned_sets: dict[str, dict[str, FinetuneResult]] = {}
    encoders = [FrozenEncoder(n, m.video, m.proj.video, weights_fingerprint(m.video, m.proj.video))
                for n, m in nets.items()]
    tokenizer = load_tokenizer(params.model.text.name)
    metrics: dict[str, Any] = {}
    failed: list[dict[str, Any]] = []
    warnings: list[str] = []  # degenerate features: figures that rank nothing
    timing: dict[str, float] = {}
    confusion_dir, figures_dir = report_dir / "confusion", report_dir / "figures"
    if not shards:  # a part leaves the stage's reports alone
        for folder, pattern in ((confusion_dir, "*.json"), (figures_dir, "*.png")):
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(pattern):
                stale.unlink()
    for set_name, tasks in params.eval_plan().items():
        protocols = [t.protocol for t in tasks]
        path = downstream_dir / f"{set_name}.parquet"
        if not path.exists():
            raise UserError(f"no manifest {path}: run the downstream stage first "
                            "(dvc repro downstream)")
        splits = set_splits(read_table(path, "downstream"))
        t_set = time.perf_counter()
        feats, test_spec, bad_features, undecoded = _set_features(
            params, set_name, protocols, splits, encoders, out_dir / "features" / set_name,
            device, shards)
        warnings += bad_features
        failed += [{"video_id": f"{set_name}/{k}", "uri": None, "stage": STAGE, "reason": r}
                   for k, r in undecoded]
        timing[f"{set_name}_features_s"] = round(time.perf_counter() - t_set, 2)
        if shards:
            continue  # a part only extracts
        job = SetRun(params, set_name, splits, feats, test_spec, nets, tokenizer, device,
                     out_dir / "finetune" / set_name, out_dir / "features" / set_name, single,
                     _progress)
        set_metrics: dict[str, Any] = {}
        for task in tasks:
            spec = PROTOCOLS[task.protocol]
            reason = None if task.requested else spec.unavailable_reason(splits)
            if reason is not None:  # a default the set cannot take
                set_metrics[f"{spec.name}_skipped"] = reason
                continue
            t_p = time.perf_counter()
            result = spec.run(job)
            set_metrics[spec.name] = result.metrics
            failed += _quarantined(set_name, result.failed, failed)
            _write_confusion(set_name, result.predictions, confusion_dir, figures_dir)
            if result.tuned:
                tuned_sets[set_name] = result.tuned
            timing[f"{set_name}_{spec.name}_s"] = round(time.perf_counter() - t_p, 2)
        set_metrics["test_split"] = splits.test_split
        metrics[set_name] = set_metrics
    if shards:
        return (f"evaluate shards {shards[0]}/{shards[1]}: features of "
                f"{', '.join(params.eval_tasks())} extracted; `tvts stage evaluate` runs the "
                f"protocols; {time.perf_counter() - t0:.0f} s")
    for set_name, tuned in tuned_sets.items():
        if cfg.figure_clips:
            manifest = read_table(downstream_dir / f"{set_name}.parquet", "downstream")
            uris = dict(zip(manifest["downstream_id"], manifest["uri"], strict=True))
            write_png(top5_spec(top5_clips(tuned, uris, cfg.figure_clips),
                                f"{set_name}: top-5 class scores after fine-tuning"),
                      figures_dir / f"top5-{set_name}.png")
    svo_path = downstream_dir / f"{paths.SVO_TABLE}.parquet"
    if params.svo_source() is not None:
        t_v = time.perf_counter()
        if not svo_path.exists():
            raise UserError(f"no {svo_path}: run the downstream stage first (dvc repro "
                            "downstream), or set downstream.svo: null")
        metrics[paths.SVO_TABLE] = {"svo": svo_test(params, svo_path, nets, tokenizer, device)}
        timing["svo_s"] = round(time.perf_counter() - t_v, 2)
    if cfg.sort.enabled:
        t_s = time.perf_counter()
        packed, on_device = packed_frames(params, device.type, pack_dir)
        corpus = _corpus_split(params, videos_path, words_path, packed)
        # reported on the test videos: the validation ones chose the checkpoint
        held_out, split = (corpus.test, "test") if corpus.test else (corpus.val, "val")
        loader = sort_loader(params, held_out, packed, on_device)
        if loader is not None:
            metrics["transcripts"] = {"sort": {n: rounded(m) for n, m in
                                               sort_accuracies(nets, loader, device).items()},
                                      "test_split": split, "videos": len(held_out)}
            if split != "test":
                warnings.append("transcript sorting is reported on the validation videos "
                                "(the corpus has no test split): they chose the checkpoint")
            if cfg.sort.text_only_control:
                name = next(iter(nets))
                metrics["transcripts"]["text_only_sorter"] = {name: rounded(
                    text_only_control(params, nets[name], corpus.train, held_out, tokenizer,
                                       device))}
        timing["sort_s"] = round(time.perf_counter() - t_s, 2)
    # the caches dvc.yaml declares as outputs: present (maybe empty) whatever the tasks, for
    # DVC fails a stage whose output is missing (evaluate.tasks without fine-tuning)
    for cache in ("features", "finetune"):
        (out_dir / cache).mkdir(parents=True, exist_ok=True)
    write_table(frame(failed, "quarantine"), out_dir / "quarantine.parquet", "quarantine")
    record_params(params, report_dir)
    timing["total_s"] = round(time.perf_counter() - t0, 2)
    metrics["timing"] = timing
    if warnings:
        metrics["warnings"] = warnings
    write_metrics(metrics_path, headline_metrics(metrics), metrics)
    atomic_write_text(report_dir / "summary.md", summary_table(metrics))
    return ("evaluate: " + headline(metrics) + f"; {timing['total_s']:.0f} s"
            + "".join(f"\nWARNING {w}" for w in warnings))
