"""Corpus sources: each turns `corpus.source` into candidate files to probe.

A candidate that is already known to be unusable (an unreadable S3 object, a YT-Temporal
video without annotation) carries its reason and goes straight to quarantine.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvts.config import CorpusConfig
from tvts.errors import UserError
from tvts.storage import S3Cache, display_path, list_s3, s3_client

YT_PREFIX = "yt_temporal:"


@dataclass(frozen=True)
class Candidate:
    uri: str
    path: Path | None
    source: str
    source_id: str | None = None  # an id the source assigns (YouTube id)
    error: str | None = None


@dataclass
class Collected:
    candidates: list[Candidate]
    # YT-Temporal words: (source_id, idx, word, start_s)
    subtitles: list[dict[str, Any]] = field(default_factory=list)
    ignored_files: int = 0


def source_kind(source: str) -> str:
    if source == "demo":
        return "demo"
    if source.startswith("s3://"):
        return "s3"
    if source.startswith(YT_PREFIX):
        return "yt_temporal"
    return "dir"


def _existing_dir(path: str, key_value: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise UserError(
            f"corpus.source = {key_value!r}: {p} is not a directory. Set corpus.source to "
            "'demo', a directory of videos, 's3://bucket/prefix' or 'yt_temporal:<dir>'."
        )
    return p


def _video_files(root: Path, extensions: list[str]) -> tuple[list[Path], int]:
    """Video files under `root` (hidden ones skipped) and the count of other files, not
    counting sidecars that share a video's name (`clip.mp4` + `clip.json`)."""
    files, others = [], []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        (files if p.suffix.lower() in extensions else others).append(p)
    stems = {p.with_suffix("") for p in files}
    return files, sum(p.with_suffix("") not in stems for p in others)


def scan_dir(root: Path, cfg: CorpusConfig, source: str = "dir") -> Collected:
    files, ignored = _video_files(root, cfg.extensions)
    return Collected([Candidate(display_path(p), p, source) for p in files], ignored_files=ignored)


def fetch_s3(cfg: CorpusConfig) -> Collected:
    client = s3_client(cfg.s3)
    objects = list_s3(client, cfg.source)
    wanted = [o for o in objects if Path(o.key).suffix.lower() in cfg.extensions]
    cache = S3Cache(cfg.cache_dir, client)

    def one(obj) -> Candidate:  # type: ignore[no-untyped-def]
        try:
            return Candidate(obj.uri, cache.fetch(obj), "s3")
        except Exception as e:  # every per-object failure is a quarantine reason
            return Candidate(obj.uri, None, "s3", error=f"unreadable S3 object: {e}")

    with ThreadPoolExecutor(max_workers=max(1, cfg.workers * 2)) as pool:
        candidates = list(pool.map(one, wanted))
    return Collected(candidates, ignored_files=len(objects) - len(wanted))


def _read_subtitles(path: Path, video_id: str) -> list[dict[str, Any]]:
    """MERLOT per-video JSON: `subtitles` = [{"word": str, "time": float}, ...]."""
    data = json.loads(path.read_text())
    subs = data.get("subtitles") if isinstance(data, dict) else None
    if not isinstance(subs, list):
        raise ValueError("no `subtitles` list")
    rows = []
    for i, item in enumerate(subs):
        if not isinstance(item, dict) or not isinstance(item.get("word"), str):
            raise ValueError(f"subtitles[{i}] is not {{'word': str, 'time': float}}")
        t = item.get("time")
        if not isinstance(t, (int, float)) or t < 0:
            raise ValueError(f"subtitles[{i}].time = {t!r} is not a time in seconds")
        rows.append({"video_id": video_id, "idx": i, "word": item["word"], "start_s": float(t)})
    return rows


def scan_yt_temporal(cfg: CorpusConfig) -> Collected:
    root = _existing_dir(cfg.source[len(YT_PREFIX) :], cfg.source)
    files, ignored = _video_files(root, cfg.extensions)
    videos: dict[str, Path] = {}
    for p in files:
        videos.setdefault(p.stem, p)
    annotations = {p.stem: p for p in sorted(root.rglob("*.json"))}
    candidates: list[Candidate] = []
    subtitles: list[dict[str, Any]] = []
    for vid in sorted(set(videos) | set(annotations)):
        video, ann = videos.get(vid), annotations.get(vid)
        if video is None:
            candidates.append(Candidate(display_path(ann), None, "yt_temporal", vid,  # type: ignore[arg-type]
                                        error="annotation without a video file"))
            continue
        uri = display_path(video)
        if ann is None:
            candidates.append(Candidate(uri, None, "yt_temporal", vid,
                                        error=f"no annotation file {vid}.json"))
            continue
        try:
            rows = _read_subtitles(ann, vid)
        except (ValueError, OSError) as e:
            candidates.append(Candidate(uri, None, "yt_temporal", vid,
                                        error=f"annotation {ann.name} unreadable: {e}"))
            continue
        subtitles.extend(rows)
        candidates.append(Candidate(uri, video, "yt_temporal", vid))
    return Collected(candidates, subtitles, ignored_files=ignored)


def collect(cfg: CorpusConfig) -> Collected:
    """Candidates for every source but `demo` (which is generated first, then scanned)."""
    kind = source_kind(cfg.source)
    if kind == "s3":
        return fetch_s3(cfg)
    if kind == "yt_temporal":
        return scan_yt_temporal(cfg)
    if kind == "dir":
        return scan_dir(_existing_dir(cfg.source, cfg.source), cfg)
    raise ValueError("the demo source is generated, not collected")
