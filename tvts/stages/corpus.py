"""`corpus` stage: corpus.source -> data/corpus/{videos,quarantine,subtitles,leak_truth}.parquet."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import polars as pl

from tvts import paths
from tvts.config import Params
from tvts.corpus.build import inspect_all, tabulate
from tvts.corpus.demo.generate import demo_item_count, generate_demo, with_script_groups
from tvts.corpus.sources import Collected, collect, scan_dir, source_kind
from tvts.errors import UserError
from tvts.stages.common import progress_bar, record_params, write_metrics
from tvts.storage import atomic_write_text, display_path
from tvts.tables import frame, write_table

OUT_DIR = paths.CORPUS
METRICS = paths.metrics_of("corpus")
IGNORED_SHOWN = 20  # names in the metrics; ignored_files.txt lists them all


def _generate(params: Params, out_dir: Path) -> tuple[Collected, list[dict]]:
    """Generate the demo into a temp dir, then swap it in: never a half-written demo."""
    cfg = params.corpus
    final, partial = out_dir / "demo", out_dir / ".demo.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with progress_bar(demo_item_count(cfg.demo), "demo corpus") as bar:
        out = generate_demo(cfg.demo, params.seed, partial, cfg.workers, bar.update)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    collected = with_script_groups(scan_dir(final / "pretrain", cfg, source="demo"))
    truth = [{"uri": display_path(final / "pretrain" / lk["file"]), **lk} for lk in out.leaks]
    return collected, truth


def no_usable_video(quarantine: pl.DataFrame, source: str, shown: int = 5) -> str:
    """Why a source gave no video: the commonest quarantine reasons, with an example each."""
    lines = [f"corpus.source = {source!r}: none of its {quarantine.height} file(s) is a usable "
             "video; the commonest reasons:"]
    by_reason = quarantine.group_by("reason").agg(pl.len().alias("n"), pl.first("uri"))
    for r in by_reason.sort(["n", "reason"], descending=[True, False]).head(shown).iter_rows(
            named=True):
        lines.append(f"  {r['n']} x {r['reason']} (e.g. {r['uri']})")
    return "\n".join(lines)


def run(params: Params, out_dir: Path = OUT_DIR, metrics_path: Path = METRICS) -> str:
    t0 = time.perf_counter()
    cfg = params.corpus
    kind = source_kind(cfg.source)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth: list[dict] = []
    if kind == "demo":
        collected, truth = _generate(params, out_dir)
    else:
        collected = collect(cfg)
    t_collect = time.perf_counter() - t0

    with progress_bar(len(collected.candidates), "probing") as bar:
        inspected = inspect_all(collected.candidates, cfg, bar.update)
    videos, quarantine = tabulate(inspected, cfg)
    if videos.height == 0:
        raise UserError(no_usable_video(quarantine, cfg.source))

    kept = set(videos["video_id"])
    subtitles = frame(collected.subtitles, "subtitles").filter(pl.col("video_id").is_in(kept))
    uri_to_id = dict(zip(videos["uri"], videos["video_id"], strict=True))
    leak_truth = frame(
        [{"video_id": uri_to_id.get(t["uri"]), "uri": t["uri"],
          "downstream_set": t["downstream_set"], "downstream_id": t["downstream_id"],
          "alteration": t["alteration"], "offset_s": t["offset_s"]} for t in truth],
        "leak_truth",
    )
    write_table(videos, out_dir / "videos.parquet", "videos")
    write_table(quarantine, out_dir / "quarantine.parquet", "quarantine")
    write_table(subtitles, out_dir / "subtitles.parquet", "subtitles")
    write_table(leak_truth, out_dir / "leak_truth.parquet", "leak_truth")
    atomic_write_text(out_dir / "ignored_files.txt", "".join(f"{n}\n" for n in collected.ignored))
    record_params(params, out_dir)

    reasons = Counter(r.split(":")[0].split(" (")[0] for r in quarantine["reason"])
    metrics = {
        "source": kind,
        "videos": videos.height,
        "quarantined": quarantine.height,
        "quarantine_reasons": dict(sorted(reasons.items())),
        "without_audio": int((~videos["has_audio"]).sum()),
        "hours": round(float(videos["duration_s"].sum()) / 3600, 4),
        "val_videos": int((videos["split"] == "val").sum()),
        "ignored_files": collected.ignored_files,
        # by name: nothing is left out silently (all of them in ignored_files.txt)
        "ignored_examples": collected.ignored[:IGNORED_SHOWN],
        "planted_leaks": leak_truth.height,
        "raw_subtitles_only": collected.raw_subtitles_only,
    }
    write_metrics(metrics_path, {k: metrics[k] for k in ("videos", "quarantined")}, metrics)
    elapsed = time.perf_counter() - t0
    return (
        f"corpus: {videos.height} videos ({metrics['hours'] * 60:.1f} min, "
        f"{metrics['without_audio']} without audio), {quarantine.height} quarantined, "
        f"source={kind}; {elapsed:.1f} s ({t_collect:.1f} s "
        f"{'generating' if kind == 'demo' else 'collecting'})"
    )
