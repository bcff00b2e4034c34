"""`downstream` stage: downstream.sets -> data/downstream/<set>.parquet (one row per annotated
item), quarantine for clips that are missing or do not probe, metrics/downstream.json."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tvts.config import Params
from tvts.corpus.probe import ProbeError, probe_video
from tvts.downstream.manifests import DEMO_ROOT, read_set
from tvts.errors import UserError
from tvts.parallel import process_map
from tvts.stages.common import progress_bar, write_metrics
from tvts.tables import frame, write_table

OUT_DIR = Path("data/downstream")
METRICS = Path("metrics/downstream.json")
STAGE = "downstream"


def _probe(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    row = dict(row)
    missing = row.pop("missing", None)
    if missing:
        return row, missing
    try:
        return {**row, "duration_s": probe_video(row["uri"]).duration_s}, None
    except (ProbeError, OSError) as e:
        return row, str(e)


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
    write_table(frame(bad, "quarantine"), partial / "quarantine.parquet", "quarantine")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    write_metrics(metrics_path, {
        "items": sum(m["items"] for m in metrics.values()),
        "quarantined": sum(m["quarantined"] for m in metrics.values())}, metrics)
    return "downstream: " + ", ".join(f"{n} {m['items']} clips ({m['quarantined']} quarantined)"
                                      for n, m in metrics.items())
