"""The leakage review page: every flagged pair, its two best-matching frames side by side.

Everything that comes from data (ids, paths, captions) is HTML-escaped; thumbnails are files
beside the page, named by a hash so no data reaches a file name either.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from tvts.config import S3Config
from tvts.dedup.decisions import decision_line
from tvts.dedup.frames import centre_crop, read_frames_at
from tvts.storage import atomic_path, atomic_write_text, local_file
from tvts.video.decoders import DecodeError

THUMB_HEIGHT = 120
MAX_PAIRS = 500

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 6px 10px; vertical-align: top; text-align: left; }
.thumbs { display: flex; gap: 6px; }
.thumbs figure { margin: 0; }
.thumbs figcaption { font-size: 0.8em; color: #555; }
code { font-size: 0.85em; word-break: break-all; }
.exclude { color: #a00; font-weight: 600; }
.keep { color: #070; font-weight: 600; }
td.exclude code, td.keep code, td.exclude small, td.keep small { color: #222; font-weight: normal; }
"""


@dataclass(frozen=True)
class ReportContext:
    encoder: str
    views: str
    threshold: float
    min_matching_frames: int
    index_kind: str
    decisions_path: str
    videos_checked: int
    items_indexed: int
    decoder: str = "pyav"
    decode_size: int = 128
    s3: S3Config = field(default_factory=S3Config)
    cache_dir: str = ".cache/tvts"


def _thumb(out_dir: Path, uri: str, time_s: float, scale: float, ctx: ReportContext) -> str:
    """Relative path of a JPEG thumbnail of the frame of `uri` nearest `time_s`."""
    name = hashlib.blake2b(f"{uri}|{time_s:.3f}|{scale:.3f}".encode(),
                           digest_size=10).hexdigest() + ".jpg"
    path = out_dir / "thumbs" / name
    if not path.exists():
        local = str(local_file(uri, ctx.s3, ctx.cache_dir))
        frames, _ = read_frames_at(local, np.array([time_s]), ctx.decode_size, ctx.decoder)
        img = Image.fromarray(centre_crop(frames, scale)[0])
        img.thumbnail((THUMB_HEIGHT * 4, THUMB_HEIGHT))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
    return f"thumbs/{name}"


def _figure(out_dir: Path, uri: str | None, time_s: float | None, scale: float | None,
            caption: str, ctx: ReportContext) -> str:
    if uri is None or time_s is None:
        return f"<figure><figcaption>{escape(caption)}: no matching frame</figcaption></figure>"
    try:
        src = _thumb(out_dir, uri, time_s, scale or 1.0, ctx)
    except (DecodeError, OSError, ValueError) as e:
        return (f"<figure><figcaption>{escape(caption)}: frame unavailable "
                f"({escape(str(e))})</figcaption></figure>")
    alt = f"{caption} at {time_s:.1f} s"
    return (f'<figure><img src="{escape(src)}" alt="{escape(alt)}" height="{THUMB_HEIGHT}">'
            f"<figcaption>{escape(alt)}</figcaption></figure>")


def _row(n: int, r: dict, out_dir: Path, ctx: ReportContext) -> str:
    sim = "—" if r["similarity"] is None else f"{r['similarity']:.3f}"
    frames = "—" if r["matching_frames"] is None else str(r["matching_frames"])
    view = ("" if r.get("matched_view") is None else
            f"<br><small>matched: {escape(r['matched_view'])}"
            + (f", crop {r['crop_scale']:g}" if r.get("crop_scale") not in (None, 1.0) else "")
            + "</small>")
    line = decision_line(r["video_id"], r["downstream_set"], r["downstream_id"], "keep")
    return (
        "<tr>"
        f"<td>{n}</td>"
        "<td><div class=\"thumbs\">"
        + _figure(out_dir, r["uri"], r["query_time_s"], 1.0, "pretraining", ctx)
        + _figure(out_dir, r["downstream_uri"], r["match_time_s"], r["crop_scale"],
                  "downstream", ctx)
        + "</div></td>"
        f"<td>{sim}<br><small>{frames} matching frame(s)</small>{view}</td>"
        f"<td><b>{escape(r['video_id'])}</b><br><code>{escape(r['uri'] or '')}</code></td>"
        f"<td><b>{escape(r['downstream_set'])} / {escape(r['downstream_id'])}</b><br>"
        f"<code>{escape(r['downstream_uri'] or '')}</code>"
        + (f"<br><small>{escape(r['caption'])}</small>" if r.get("caption") else "")
        + "</td>"
        f"<td class=\"{escape(r['decision'])}\">{escape(r['decision'])}<br>"
        f"<small>by {escape(r['decided_by'])}</small><br><code>{escape(line)}</code></td>"
        "</tr>"
    )


def write_report(leaks: pl.DataFrame, out_dir: str | Path, ctx: ReportContext) -> Path:
    """reports/leakage/index.html (+ thumbs/); replaces any previous report."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / "thumbs", ignore_errors=True)
    (out_dir / "thumbs").mkdir(parents=True, exist_ok=True)
    rows = leaks.sort("similarity", descending=True, nulls_last=True).head(MAX_PAIRS)
    excluded = leaks.filter(pl.col("decision") == "exclude")["video_id"].n_unique()
    body = "\n".join(_row(n, r, out_dir, ctx) for n, r in enumerate(rows.iter_rows(named=True), 1))
    more = (f"<p>Showing the {MAX_PAIRS} most similar of {leaks.height} pairs; all are in "
            "data/dedup/leaks.parquet.</p>" if leaks.height > MAX_PAIRS else "")
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Leakage review</title>
<style>{_STYLE}</style></head><body>
<h1>Leakage review</h1>
<p>Encoder <b>{escape(ctx.encoder)}</b>, views {escape(ctx.views)},
threshold {ctx.threshold:g} (cosine similarity), at least {ctx.min_matching_frames} matching
frame(s); index {escape(ctx.index_kind)}.
{ctx.videos_checked} pretraining videos checked against {ctx.items_indexed} downstream items:
{leaks.height} pair(s), {excluded} video(s) excluded from pretraining.</p>
<p>To overrule a decision, copy the pair's line into <code>{escape(ctx.decisions_path)}</code>
(decision <code>keep</code> or <code>exclude</code>) and rerun <code>dvc repro</code>.</p>
{more}
<table><thead><tr><th>#</th><th>best-matching frames</th><th>similarity</th>
<th>pretraining video</th><th>downstream item</th><th>decision</th></tr></thead>
<tbody>
{body}
</tbody></table>
</body></html>
"""
    atomic_write_text(out_dir / "index.html", html)
    return out_dir / "index.html"
