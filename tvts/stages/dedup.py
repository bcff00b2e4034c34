"""`dedup` stage: validated pretraining videos x downstream manifests -> leak pairs.

Writes data/dedup/leaks.parquet (flagged and reviewed pairs), data/dedup/videos.parquet (the
validated videos minus the excluded ones: what `pretrain` reads), data/dedup/quarantine.parquet
(clips whose frames could not be read), metrics/dedup.json and reports/leakage/index.html.
Features persist in data/dedup/features/ between runs (sharded, resumable).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl

from tvts import paths
from tvts.config import Params
from tvts.dedup.decisions import apply_decisions, read_decisions
from tvts.dedup.encoders import EncoderSpec
from tvts.dedup.extract import FeatureItem, Sampling, extract
from tvts.dedup.pairs import frame_matches, video_pairs
from tvts.dedup.report import ReportContext, write_report
from tvts.dedup.scoring import score
from tvts.dedup.search import build_split_index, measure_recall, search_split
from tvts.dedup.views import BORDERS_CUT, INSET, LUMA, ViewSet, describe
from tvts.errors import UserError
from tvts.stages.common import progress_bar, record_params, write_metrics
from tvts.storage import file_stamp
from tvts.tables import LEAKS, frame, read_table, write_table

VIDEOS = paths.VALID_VIDEOS
DOWNSTREAM = paths.DOWNSTREAM
TRUTH = paths.LEAK_TRUTH
OUT_DIR = paths.DEDUP
REPORT = paths.LEAKAGE_REPORT
METRICS = paths.metrics_of("dedup")
STAGE = "dedup"


def _read_manifests(directory: Path, sets: list[str]) -> pl.DataFrame:
    missing = [s for s in sets if not (directory / f"{s}.parquet").exists()]
    if missing:
        raise UserError(f"no manifest for downstream set(s) {', '.join(missing)} in {directory}:"
                        " run the downstream stage first (dvc repro downstream)")
    return pl.concat([read_table(directory / f"{s}.parquet", "downstream") for s in sets])


def _encoder_label(kind: str, clip_model: str, dinov2_model: str) -> str:
    return {"dct": "dct", "clip": f"clip ({clip_model})",
            "dinov2": f"dinov2 ({dinov2_model})"}[kind]


def _views_label(views: ViewSet) -> str:
    parts = [name for on, name in ((views.borders, "borders cut"), (views.flips, "flipped"),
                                   (views.luma, "luma for grey frames"),
                                   (views.insets, "insets")) if on]
    return "as is" + "".join(f" + {p}" for p in parts)


def run(params: Params, videos_path: Path = VIDEOS, downstream_dir: Path = DOWNSTREAM,
        truth_path: Path = TRUTH, out_dir: Path = OUT_DIR, report_dir: Path = REPORT,
        metrics_path: Path = METRICS, shards: tuple[int, int] | None = None) -> str:
    """The whole stage, or with `shards` = (i, n) only the feature shards s with s % n == i
    (one part of a fan-out; the whole stage afterwards reuses them and searches)."""
    t0 = time.perf_counter()
    cfg = params.dedup
    videos = read_table(videos_path, "videos")
    manifest = _read_manifests(downstream_dir, list(params.downstream.sets))
    manifest = manifest.with_columns(
        (pl.col("downstream_set") + "/" + pl.col("downstream_id")).alias("key"))
    encoder = EncoderSpec(cfg.encoder, cfg.clip_model, cfg.dinov2_model, cfg.model_cache_dir,
                          cfg.device, cfg.clip_batch_size)
    views = ViewSet(borders=cfg.crop_borders, flips=cfg.index_flips, luma=cfg.luma_path,
                    insets=cfg.query_insets)
    common: dict[str, Any] = dict(encoder=encoder, views=views, num_shards=cfg.num_shards,
                                  workers=cfg.workers, decode_size=cfg.decode_size,
                                  s3=params.corpus.s3, cache_dir=params.corpus.cache_dir,
                                  part=shards)

    items = [FeatureItem(k, u, d, file_stamp(u))
             for k, u, d in manifest.select("key", "uri", "duration_s").iter_rows()]
    with progress_bar(cfg.num_shards, "dedup: downstream features (shards)") as bar:
        indexed = extract(items, out_dir / "features" / "downstream",
                          Sampling(frames=cfg.frames_per_video,
                                   crop_scales=tuple(cfg.crop_scales)),
                          progress=bar.update, **common)
    queries = [FeatureItem(v, u, d, file_stamp(u))
               for v, u, d in videos.select("video_id", "uri", "duration_s").iter_rows()]
    with progress_bar(cfg.num_shards, "dedup: pretraining features (shards)") as bar:
        queried = extract(queries, out_dir / "features" / "pretrain",
                          Sampling(fps=cfg.query_fps, max_frames=cfg.max_query_frames,
                                   crop_scales=tuple(cfg.query_crops)),
                          indexed=False, progress=bar.update, **common)
    t_features = time.perf_counter() - t0
    if shards:
        return (f"dedup shards {shards[0]}/{shards[1]}: features of "
                f"{len(indexed.features.keys)} downstream clips and {len(queried.features.keys)}"
                f" videos; `tvts stage dedup` searches them all; {t_features:.1f} s")

    ifeats, qfeats = indexed.features, queried.features
    index = build_split_index(ifeats.vectors, (ifeats.view & LUMA) > 0, cfg.exact_max_vectors,
                              cfg.nprobe, params.seed)
    grey = (qfeats.view & LUMA) > 0
    q_rows, i_rows, sims = search_split(index, qfeats.vectors, grey, cfg.neighbours,
                                        cfg.threshold)
    recall = None
    if not index.colour.exact:  # the colour views: what nearly every query frame searches
        recall = measure_recall(index.colour, ifeats.vectors[index.colour_rows],
                                qfeats.vectors[~grey], cfg.neighbours, cfg.threshold,
                                cfg.recall_sample, params.seed)
    matches = frame_matches(qfeats, ifeats, q_rows, i_rows, sims)
    pairs = video_pairs(matches, cfg.min_matching_frames)
    pairs = pairs.with_columns(
        pl.struct("view", "query_crop").map_elements(
            lambda r: describe(r["view"]) + (f", pretraining frame's centre {r['query_crop']:g}"
                                             if r["query_crop"] < 1.0 else ""),
            return_dtype=pl.Utf8).alias("matched_view")).drop("view", "query_crop")

    ids = manifest.select("key", "downstream_set", "downstream_id",
                          pl.col("uri").alias("downstream_uri"))
    pairs = (pairs.rename({"query_key": "video_id", "index_key": "key"})
             .join(ids.drop("downstream_uri"), on="key", how="left").drop("key"))
    decisions_path = Path(cfg.decisions)
    leaks = (apply_decisions(pairs, read_decisions(decisions_path), str(decisions_path))
             .join(videos.select("video_id", "uri"), on="video_id", how="left")
             .join(ids.drop("key"), on=["downstream_set", "downstream_id"], how="left"))
    leaks = write_table(leaks.select(LEAKS.names()), out_dir / "leaks.parquet", "leaks")

    excluded = set(leaks.filter(pl.col("decision") == "exclude")["video_id"])
    kept = videos.filter(~pl.col("video_id").is_in(list(excluded)))
    write_table(kept, out_dir / "videos.parquet", "videos")
    failed = indexed.features.failed + queried.features.failed
    uris = dict(zip(manifest["key"], manifest["uri"], strict=True))
    uris.update(zip(videos["video_id"], videos["uri"], strict=True))
    write_table(frame([{"video_id": k, "uri": uris.get(k), "stage": STAGE, "reason": r}
                       for k, r in failed], "quarantine"), out_dir / "quarantine.parquet",
                "quarantine")
    record_params(params, out_dir)

    ctx = ReportContext(encoder=_encoder_label(cfg.encoder, cfg.clip_model, cfg.dinov2_model),
                        views=_views_label(views),
                        threshold=cfg.threshold, min_matching_frames=cfg.min_matching_frames,
                        index_kind=index.kind, decisions_path=str(decisions_path),
                        videos_checked=videos.height, items_indexed=manifest.height,
                        decode_size=cfg.decode_size, s3=params.corpus.s3,
                        cache_dir=params.corpus.cache_dir)
    first_caption = pl.col("captions").list.first().alias("caption")
    report_leaks = leaks.join(manifest.select("downstream_set", "downstream_id", first_caption),
                              on=["downstream_set", "downstream_id"], how="left")
    write_report(report_leaks, report_dir, ctx)

    metrics: dict[str, Any] = {
        "encoder": cfg.encoder, "threshold": cfg.threshold, "index": index.colour.kind,
        "luma_index": None if index.luma is None else index.luma.kind,
        "videos_checked": videos.height, "items_indexed": manifest.height,
        "views": _views_label(views),
        "query_frames": len(qfeats.vectors), "grey_query_frames": int(grey.sum()),
        "query_frames_borders_cut": int(((qfeats.view & BORDERS_CUT) > 0).sum()),
        "query_insets": int(((qfeats.view & INSET) > 0).sum()),
        "indexed_vectors": len(ifeats.vectors),
        "frame_pairs": len(sims), "pairs": leaks.height,
        "excluded_videos": len(excluded), "videos_kept": kept.height,
        "quarantined": len(failed),
        "shards_reused": indexed.shards_reused + queried.shards_reused,
        "features_s": round(t_features, 1), "total_s": round(time.perf_counter() - t0, 1),
    }
    if recall is not None:
        metrics["index_recall"] = {"pairs": recall.pairs, "top1": recall.top1,
                                   "sampled_queries": recall.queries}
    if truth_path.exists():
        truth = read_table(truth_path, "leak_truth").filter(
            pl.col("video_id").is_in(list(videos["video_id"])))
        metrics["planted"] = score(leaks, truth)
    planted = metrics.get("planted")
    headline = {"videos": kept.height, "quarantined": len(failed), "leaks": len(excluded)}
    if planted:
        headline |= {"planted_recall": planted["video_recall"],
                     "planted_precision": planted["video_precision"]}
    write_metrics(metrics_path, headline, metrics)
    scored = (f"; planted leaks: precision {planted['pair_precision']}, recall "
              f"{planted['pair_recall']}" if planted else "")
    return (f"dedup ({cfg.encoder}): {leaks.height} pair(s), {len(excluded)} of {videos.height} "
            f"videos excluded{scored}; report {report_dir / 'index.html'}")

