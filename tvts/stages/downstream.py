"""`downstream` stage: downstream.sets -> data/downstream/<set>.parquet (one row per annotated
item), downstream.svo -> data/downstream/svo_probes.parquet, quarantine for clips that are
missing or do not probe and probes whose images are missing, metrics/downstream.json."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tvts import paths
from tvts.config import Params
from tvts.corpus.probe import ProbeError, probe_video
from tvts.downstream.manifests import DEMO_ROOT, read_set
from tvts.downstream.svo import read_svo_probes
from tvts.errors import UserError
from tvts.parallel import process_map
from tvts.stages.common import progress_bar, write_metrics
from tvts.tables import frame, write_table

OUT_DIR = paths.DOWNSTREAM
METRICS = paths.metrics_of("downstream")
STAGE = "downstream"
SVO_TABLE = paths.SVO_TABLE


def _probe(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    row = dict(row)
    missing = row.pop("missing", None)
    row.pop("source", None)
    if missing:
        return row, missing
    try:
        return {**row, "duration_s": probe_video(row["uri"]).duration_s}, None
    except (ProbeError, OSError) as e:
        return row, str(e)


def _svo_source(params: Params, demo_root: Path) -> tuple[Path, Path | None] | None:
    """(root, images) of downstream.svo, or None when it is off."""
    source = params.svo_source()
    if source is None:
        return None
    if source == "demo":
        root = demo_root / "svo"
        if not root.is_dir():
            raise UserError(f"downstream.svo = demo, but {root} does not exist: run the corpus "
                            "stage with corpus.source = demo first (dvc repro corpus), or set "
                            "downstream.svo to {root: <folder of svo_probes.csv>} or null")
        return root, None
    return Path(source.root), Path(source.images) if source.images else None


def run(params: Params, out_dir: Path = OUT_DIR, metrics_path: Path = METRICS,
        demo_root: Path = DEMO_ROOT) -> str:
    sets = params.downstream.sets
    if not sets:
        raise UserError("downstream.sets is empty: name at least one set (name: demo | DIR)")
    rows = [r for name, source in sets.items() for r in read_set(name, source, demo_root)]
    with progress_bar(len(rows), "probing downstream clips") as bar:
        probed = process_map(_probe, rows, params.downstream.workers, bar.update, chunksize=8)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    metrics: dict[str, Any] = {}
    for name in sets:
        ok = [r for r, err in probed if err is None and r["downstream_set"] == name]
        write_table(frame(ok, "downstream"), partial / f"{name}.parquet", "downstream")
        metrics[name] = {"items": len(ok),
                         "quarantined": sum(1 for r, err in probed
                                            if err and r["downstream_set"] == name)}
    bad = [{"video_id": f"{r['downstream_set']}/{r['downstream_id']}", "uri": r["uri"],
            "stage": STAGE, "reason": err} for r, err in probed if err]
    svo = _svo_source(params, demo_root)
    if svo is not None:
        probes, svo_bad = read_svo_probes(*svo)
        write_table(frame(probes, "svo_probes"), partial / f"{SVO_TABLE}.parquet",
                    "svo_probes")
        bad += svo_bad
        metrics[SVO_TABLE] = {"items": len(probes), "quarantined": len(svo_bad)}
    write_table(frame(bad, "quarantine"), partial / "quarantine.parquet", "quarantine")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    write_metrics(metrics_path, {
        "items": sum(m["items"] for m in metrics.values()),
        "quarantined": sum(m["quarantined"] for m in metrics.values())}, metrics)
    return "downstream: " + ", ".join(f"{n} {m['items']} items ({m['quarantined']} quarantined)"
                                      for n, m in metrics.items())
