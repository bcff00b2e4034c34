"""`evaluate` stage: the exported encoders (and a random-weights floor) on the downstream sets
by frozen-encoder protocols, and transcript sorting on the corpus' held-out videos ->
metrics/eval.json (set -> protocol -> encoder -> metric), linear-probe confusion matrices for
`dvc plots`, cached feature shards in data/eval/features."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from tvts.config import DownstreamSource, Params
from tvts.data.tvts_dataset import (
    CorpusSplits,
    SampleSpec,
    TVTSCollate,
    TVTSDataset,
    VideoEntry,
    load_entries,
    split_entries,
    split_feasible,
)
from tvts.errors import UserError
from tvts.eval.encoders import init_differs, init_model, load_exported, random_model
from tvts.eval.features import ClipItem, FrozenEncoder, ViewSpec, extract, weights_fingerprint
from tvts.eval.figures import top5_clips
from tvts.eval.finetune import FinetuneResult
from tvts.eval.metrics import degeneracy
from tvts.eval.probes import ProbeSettings
from tvts.eval.protocols import classify, set_splits, text_to_video, video_to_video
from tvts.eval.sorting import sort_accuracies
from tvts.eval.summary import headline, headline_metrics, summary_table
from tvts.eval.text_sorter import TextSortSettings, train_text_only_sorter
from tvts.eval.trained_protocols import (
    finetune_set,
    has_captioned_train,
    rounded,
    svo_test,
    t2v_finetune_set,
)
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

DOWNSTREAM = Path("data/downstream")
MODELS = {"pretrain": Path("models/pretrain"), "post_pretrain": Path("models/post_pretrain")}
VIDEOS = Path("data/dedup/videos.parquet")
WORDS = Path("data/asr/words.parquet")
OUT_DIR = Path("data/eval")
SVO_PROBES = "svo_probes"  # data/downstream/svo_probes.parquet
REPORT = Path("reports/eval")
METRICS = Path("metrics/eval.json")
STAGE = "evaluate"
FEATURE_PROTOCOLS = ("linear", "attentive", "v2v", "t2v")  # on the frozen-feature cache
RETRIEVAL_PROTOCOLS = {"t2v", "t2v_finetune"}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _frames(params: Params, protocols: list[str]) -> int:
    """Frames per clip of a set: evaluate.retrieval_frames for a set evaluated by retrieval
    only (the paper's 4), data.num_frames otherwise (a set that mixes classification and
    retrieval protocols is read once, at the classification count)."""
    if set(protocols) <= RETRIEVAL_PROTOCOLS and params.evaluate.retrieval_frames:
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


def _models(params: Params, models: dict[str, Path], device: torch.device
            ) -> dict[str, TVTSModel]:
    """The encoders to compare; `init` only where it is not the `random` model again."""
    build = {"random": random_model, "init": init_model}
    out = {}
    for name in params.evaluate.encoders:
        if name == "init" and not init_differs(params) and "random" in params.evaluate.encoders:
            continue
        out[name] = (build[name](params) if name in build
                     else load_exported(params, models[name])).to(device)
    return out


def _corpus_split(params: Params, videos_path: Path, words_path: Path,
                  packed: PackedIndex | None) -> CorpusSplits:
    """The pretrain stage's training, validation and test videos."""
    videos = read_table(videos_path, "videos")
    spec = SampleSpec.from_params(params, False, 0.0)
    usable, _ = split_feasible(load_entries(videos, read_table(words_path, "words")), spec)
    return split_entries(split_packed(usable, packed)[0], videos)


def _sort_loader(params: Params, held_out: list[VideoEntry], packed: PackedIndex | None,
                 on_device: bool) -> DataLoader | None:
    """Held-out samples of `held_out` (the test videos), drawn as the pretrain stage draws
    its validation samples (seed, spec, frames)."""
    spec = SampleSpec.from_params(params, False, 0.0)
    if not held_out:
        return None
    data = TVTSDataset(held_out, spec, params.seed + 1, params.corpus.s3, params.corpus.cache_dir,
                       repeats=params.evaluate.sort.clips_per_video, packed=packed,
                       device_decode=on_device)
    return DataLoader(data, batch_size=params.evaluate.batch_size,
                      num_workers=params.evaluate.loader_workers,
                      collate_fn=TVTSCollate(params.model.text.name,
                                             params.data.max_text_tokens))


def _text_only_control(params: Params, model: TVTSModel, train: list[VideoEntry],
                       val: list[VideoEntry], tokenizer: Any, device: torch.device
                       ) -> dict[str, float]:
    """A sorter as pretraining built and trained it, on `model`'s text features alone."""
    p, cap = params.pretrain, params.evaluate.sort.text_only_videos
    if cap is not None and len(train) > cap:
        train = [train[i] for i in sorted(random.Random(params.seed).sample(range(len(train)),
                                                                            cap))]
    settings = TextSortSettings(p.epochs, p.clips_per_video, p.batch_size, p.lr,
                                p.weight_decay, p.schedule, p.lr_milestones, p.warmup_epochs,
                                params.evaluate.sort.clips_per_video, params.seed)
    text = model.text.to(device).eval()

    def encode(texts: list[str]) -> torch.Tensor:
        enc = tokenizer(texts, padding=True, truncation=True,
                        max_length=params.data.max_text_tokens, return_tensors="pt").to(device)
        return text(enc["input_ids"], enc["attention_mask"])

    sorter = init_model(params).sorter  # the pretraining sorter's initial weights
    result = train_text_only_sorter(sorter, encode, train, val,
                                    SampleSpec.from_params(params, False, 0.0), settings)
    return result | {"train_videos": len(train)}


def _quarantined(set_name: str, reasons: dict[str, str], already: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Quarantine rows for clips a protocol could not decode, once each."""
    seen = {r["video_id"] for r in already}
    return [{"video_id": f"{set_name}/{k}", "uri": None, "stage": STAGE, "reason": r}
            for k, r in sorted(reasons.items()) if f"{set_name}/{k}" not in seen]


def run(params: Params, downstream_dir: Path = DOWNSTREAM, models: dict[str, Path] = MODELS,
        videos_path: Path = VIDEOS, words_path: Path = WORDS, out_dir: Path = OUT_DIR,
        report_dir: Path = REPORT, metrics_path: Path = METRICS,
        shards: tuple[int, int] | None = None, pack_dir: Path = PACK_DIR) -> str:
    """The whole stage, or with `shards` = (i, n) only the feature shards s with s % n == i
    of every set (one part of a fan-out; the whole stage afterwards reuses them)."""
    t0 = time.perf_counter()
    cfg = params.evaluate
    device = _device(cfg.device)
    nets = _models(params, models, device)
    single = Dist(0, 1, 0, device)  # fine-tuning runs in this process (see README)
    finetune_dir = out_dir / "finetune"
    figures: dict[str, dict[str, FinetuneResult]] = {}
    encoders = [FrozenEncoder(n, m.video, m.proj.video, weights_fingerprint(m.video, m.proj.video))
                for n, m in nets.items()]
    tokenizer = load_tokenizer(params.model.text.name)
    ks = tuple(cfg.recall_at)
    v2v_ks = tuple(k for k in ks if k <= 10) or ks  # R@1/5/10 by convention
    probe = {"linear": ProbeSettings(cfg.linear.epochs, cfg.linear.batch_size, cfg.linear.lr,
                                     cfg.linear.weight_decay, cfg.linear.momentum,
                                     seed=params.seed),
             "attentive": ProbeSettings(cfg.attentive.epochs, cfg.attentive.batch_size,
                                        cfg.attentive.lr, cfg.attentive.weight_decay,
                                        heads=cfg.attentive.heads, seed=params.seed)}
    d = params.data
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
    for set_name, protocols in params.eval_tasks().items():
        path = downstream_dir / f"{set_name}.parquet"
        if not path.exists():
            raise UserError(f"no manifest {path}: run the downstream stage first "
                            "(dvc repro downstream)")
        splits = set_splits(read_table(path, "downstream"))
        tv, sv = _views(params, set_name)
        frames = _frames(params, protocols)
        parts = {"test": (splits.test, ViewSpec(frames, d.frame_size, d.resize_short,
                                                d.decoder, tv, sv, cfg.token_grid))}
        if set(protocols) & {"linear", "attentive", "v2v"}:
            parts["train"] = (splits.train, ViewSpec(frames, d.frame_size,
                                                     d.resize_short, d.decoder, 1, 1,
                                                     cfg.token_grid))
        feats = {}
        t_set = time.perf_counter()
        for part, (rows, spec) in parts.items():
            items = [ClipItem(i, u, file_stamp(u))
                     for i, u in rows.select("downstream_id", "uri").iter_rows()]
            if not items:
                raise UserError(f"downstream set {set_name!r} has no {part} clips for "
                                f"{', '.join(protocols)}")
            with progress_bar(len(items), f"{set_name} {part} features ({spec.tag()} views)"
                              ) as bar:
                res = extract(items, encoders, spec, out_dir / "features" / set_name /
                              f"{part}-{spec.tag()}", cfg.num_shards, cfg.batch_size,
                              cfg.loader_workers, device, bar.update, shards)
            feats[part] = res.features
            if part == "test":
                warnings += [w for name, f in res.features.items() if (w := degeneracy(
                    getattr(f, cfg.linear.pooling).mean(1), f"{set_name} {name}"))]
            failed += [{"video_id": f"{set_name}/{k}", "uri": None, "stage": STAGE,
                        "reason": r} for k, r in next(iter(res.features.values())).failed]
        timing[f"{set_name}_features_s"] = round(time.perf_counter() - t_set, 2)
        if shards:
            continue  # a part only extracts
        set_metrics: dict[str, Any] = {}
        for protocol in protocols:
            t_p = time.perf_counter()
            by_encoder: dict[str, Any] = {}
            for name in nets if protocol in FEATURE_PROTOCOLS else ():
                test, train = feats["test"][name], feats.get("train", {}).get(name)
                if protocol in ("linear", "attentive"):
                    s = probe[protocol]
                    with progress_bar(s.epochs, f"{set_name} {protocol} probe ({name})") as bar:
                        res_c = classify(protocol, train, splits.train, test, splits.test, s,
                                         cfg.linear.pooling, bar.update)
                    by_encoder[name] = rounded(res_c.metrics)
                    if protocol == "linear":
                        write_json(confusion_dir / f"{set_name}-{name}.json",
                                   confusion_rows(res_c.actual, res_c.predicted))
                        rows_c = [{"actual": a, "predicted": p}
                                  for a, p in zip(res_c.actual, res_c.predicted, strict=True)]
                        write_png(confusion_spec(rows_c, f"{set_name}: linear probe on "
                                                          f"{name} features (test clips)"),
                                  figures_dir / f"confusion-{set_name}-{name}.png")
                elif protocol == "v2v":
                    by_encoder[name] = rounded(video_to_video(train, splits.train, test,
                                                             splits.test, v2v_ks,
                                                             cfg.linear.pooling))
                elif protocol == "t2v":
                    by_encoder[name] = rounded(text_to_video(
                        nets[name], tokenizer, test, splits.test, ks,
                        cfg.max_caption_tokens, device))
            if protocol == "finetune":
                tuned = finetune_set(params, set_name, splits, parts["test"][1], nets,
                                     finetune_dir / set_name, single)
                by_encoder = {n: rounded(r.metrics) for n, r in tuned.items()}
                figures[set_name] = tuned
                failed += _quarantined(set_name, {k: r for t in tuned.values()
                                                  for k, r in t.failed}, failed)
            elif (protocol == "t2v_finetune" and cfg.tasks is None
                  and not has_captioned_train(splits)):
                # by default only where the set has a captioned train split
                set_metrics["t2v_finetune_skipped"] = "no captioned clips in the train split"
                continue
            elif protocol == "t2v_finetune":
                by_encoder, bad = t2v_finetune_set(params, set_name, splits, parts["test"][1],
                                                   nets, tokenizer, finetune_dir / set_name,
                                                   out_dir / "features" / set_name /
                                                   f"test-{parts['test'][1].tag()}", single)
                failed += _quarantined(set_name, bad, failed)
            set_metrics[protocol] = by_encoder
            timing[f"{set_name}_{protocol}_s"] = round(time.perf_counter() - t_p, 2)
        set_metrics["test_split"] = splits.test_split
        metrics[set_name] = set_metrics
    if shards:
        return (f"evaluate shards {shards[0]}/{shards[1]}: features of "
                f"{', '.join(params.eval_tasks())} extracted; `tvts stage evaluate` runs the "
                f"protocols; {time.perf_counter() - t0:.0f} s")
    for set_name, tuned in figures.items():
        if cfg.figure_clips:
            manifest = read_table(downstream_dir / f"{set_name}.parquet", "downstream")
            uris = dict(zip(manifest["downstream_id"], manifest["uri"], strict=True))
            write_png(top5_spec(top5_clips(tuned, uris, cfg.figure_clips),
                                f"{set_name}: top-5 class scores after fine-tuning"),
                      figures_dir / f"top5-{set_name}.png")
    svo_path = downstream_dir / f"{SVO_PROBES}.parquet"
    if params.svo_source() is not None:
        t_v = time.perf_counter()
        if not svo_path.exists():
            raise UserError(f"no {svo_path}: run the downstream stage first (dvc repro "
                            "downstream), or set downstream.svo: null")
        metrics[SVO_PROBES] = {"svo": svo_test(params, svo_path, nets, tokenizer, device)}
        timing["svo_s"] = round(time.perf_counter() - t_v, 2)
    if cfg.sort.enabled:
        t_s = time.perf_counter()
        packed, on_device = packed_frames(params, device.type, pack_dir)
        corpus = _corpus_split(params, videos_path, words_path, packed)
        # reported on the test videos: the validation ones chose the checkpoint
        held_out, split = (corpus.test, "test") if corpus.test else (corpus.val, "val")
        loader = _sort_loader(params, held_out, packed, on_device)
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
                    _text_only_control(params, nets[name], corpus.train, held_out, tokenizer,
                                       device))}
        timing["sort_s"] = round(time.perf_counter() - t_s, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
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
