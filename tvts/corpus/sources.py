"""Corpus sources: each turns `corpus.source` into candidate files to probe.

A candidate that is already known to be unusable (an unreadable S3 object, a YT-Temporal
video without annotation) carries its reason and goes straight to quarantine.
"""

from __future__ import annotations

import difflib
import gzip
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvts.config import CorpusConfig
from tvts.errors import UserError
from tvts.storage import S3Cache, Unlisted, display_path, list_s3, s3_client, walk_files

YT_PREFIX = "yt_temporal:"


@dataclass(frozen=True)
class Candidate:
    uri: str
    path: Path | None
    source: str
    source_id: str | None = None  # an id the source assigns (YouTube id)
    error: str | None = None
    # videos of one group land in one split (the demo: a script's videos, which say the same
    # sentences); None: the video alone
    split_group: str | None = None


@dataclass
class Collected:
    candidates: list[Candidate]
    # YT-Temporal words: (source_id, idx, word, start_s)
    subtitles: list[dict[str, Any]] = field(default_factory=list)
    # files / objects not taken (their suffix is not in corpus.extensions), by name
    ignored: list[str] = field(default_factory=list)
    # YT-Temporal videos without cleaned (`denoised`) words, whose raw words were taken
    raw_subtitles_only: int = 0

    @property
    def ignored_files(self) -> int:
        return len(self.ignored)


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


def _sidecar_base(p: Path) -> Path:
    """`clip.json`, `clip.grover.json`, `clip.info.json` -> `clip` (a video's annotation)."""
    base = p.with_suffix("")
    return base.with_suffix("") if p.suffix.lower() == ".json" and base.suffix else base


@dataclass
class _Listing:
    videos: list[Path]  # files with a video suffix
    ignored: list[Path]  # other files, not sidecars or annotation shards
    files: list[Path]  # every file found
    unlisted: list[Unlisted]  # entries that lead to no file (dangling links, loops, ...)

    def broken(self, source: str) -> list[Candidate]:
        """Quarantine candidates for the entries that lead to no file."""
        return [Candidate(display_path(u.path), None, source, error=u.reason)
                for u in self.unlisted]


def _list_dir(root: Path, extensions: list[str], skip: tuple[str, ...] = ()) -> _Listing:
    """Video files under `root` (hidden ones skipped), leaving out of the other files the
    sidecars that share a video's name (`clip.mp4` + `clip.json` or `clip.grover.json`) and
    names ending in `skip` (annotation shards the source reads)."""
    found, unlisted = walk_files(root)
    files, others = [], []
    for p in found:
        (files if p.suffix.lower() in extensions else others).append(p)
    stems = {p.with_suffix("") for p in files}
    ignored = [p for p in others if p.with_suffix("") not in stems
               and _sidecar_base(p) not in stems and not p.name.lower().endswith(skip)]
    return _Listing(files, ignored, found, unlisted)


def _no_videos(root: Path, listing: _Listing, cfg: CorpusConfig, key_value: str) -> UserError:
    return UserError(
        f"corpus.source = {key_value!r}: {root} holds no video files ({len(listing.ignored)} "
        f"other file(s), {len(listing.unlisted)} broken link(s) or unreadable entries). The "
        f"corpus takes files ending in {', '.join(cfg.extensions)} (corpus.extensions), in "
        "any sub-folder; names starting with '.' are skipped.")


def scan_dir(root: Path, cfg: CorpusConfig, source: str = "dir") -> Collected:
    listing = _list_dir(root, cfg.extensions)
    if not listing.videos and source == "dir":
        raise _no_videos(root, listing, cfg, cfg.source)
    return Collected([Candidate(display_path(p), p, source) for p in listing.videos]
                     + listing.broken(source),
                     ignored=[display_path(p) for p in listing.ignored])


def fetch_s3(cfg: CorpusConfig) -> Collected:
    client = s3_client(cfg.s3)
    objects = list_s3(client, cfg.source)
    wanted = [o for o in objects if Path(o.key).suffix.lower() in cfg.extensions]
    if not wanted:
        raise UserError(
            f"corpus.source = {cfg.source!r}: no object under this prefix ends in "
            f"{', '.join(cfg.extensions)} (corpus.extensions); {len(objects)} other object(s). "
            "Check the prefix (keys are case-sensitive) and corpus.extensions.")
    cache = S3Cache(cfg.cache_dir, client)

    def one(obj) -> Candidate:  # type: ignore[no-untyped-def]
        try:
            return Candidate(obj.uri, cache.fetch(obj), "s3")
        except Exception as e:  # every per-object failure is a quarantine reason
            return Candidate(obj.uri, None, "s3", error=f"unreadable S3 object: {e}")

    with ThreadPoolExecutor(max_workers=max(1, cfg.workers * 2)) as pool:
        candidates = list(pool.map(one, wanted))
    return Collected(candidates, ignored=[o.uri for o in objects
                                          if Path(o.key).suffix.lower() not in cfg.extensions])


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def align_denoised(raw: list[tuple[str, float]], denoised: list[str]
                   ) -> list[tuple[str, float]]:
    """Times for the cleaned words from the raw words' timing: the two word sequences are
    aligned (difflib, case and punctuation ignored); a matched word takes its raw word's
    time, the cleaned words of a changed stretch are spread over the raw words it replaces,
    an inserted one takes the time of the raw word before it. Times never decrease when the
    raw ones do not."""
    if not raw or not denoised:
        return []
    sm = difflib.SequenceMatcher(None, [_norm(w) for w, _ in raw],
                                 [_norm(w) for w in denoised], autojunk=False)
    at = [0] * len(denoised)  # the raw word each cleaned word takes its time from
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        for k in range(j2 - j1):
            if tag == "equal":
                at[j1 + k] = i1 + k
            elif tag == "replace":
                at[j1 + k] = i1 + k * (i2 - i1) // (j2 - j1)
            elif tag == "insert":
                at[j1 + k] = max(i1 - 1, 0)
    return [(w, raw[i][1]) for w, i in zip(denoised, at, strict=True)]


def subtitle_rows(data: Any, video_id: str, text: str = "denoised"
                  ) -> tuple[list[dict[str, Any]], bool]:
    """MERLOT's annotation of one video: `subtitles` = [{"word": str, "time": float}, ...]
    (YouTube's ASR words) and `denoised` = [{"cleanasr": str, ...}, ...] (the same speech,
    cleaned). `text`: `raw` keeps the subtitle words; `denoised` (the release) takes the
    cleaned words, timed by aligning them to the subtitles. Returns the rows and whether the
    cleaned words were asked for but absent (the raw words are used then)."""
    subs = data.get("subtitles") if isinstance(data, dict) else None
    if not isinstance(subs, list):
        raise ValueError("no `subtitles` list")
    raw = []
    for i, item in enumerate(subs):
        if not isinstance(item, dict) or not isinstance(item.get("word"), str):
            raise ValueError(f"subtitles[{i}] is not {{'word': str, 'time': float}}")
        t = item.get("time")
        if not isinstance(t, (int, float)) or t < 0:
            raise ValueError(f"subtitles[{i}].time = {t!r} is not a time in seconds")
        raw.append((item["word"], float(t)))
    words, fell_back = raw, False
    if text == "denoised":
        chunks = data.get("denoised")
        if chunks is not None and not isinstance(chunks, list):
            raise ValueError("`denoised` is not a list")
        cleaned = []
        for i, chunk in enumerate(chunks or []):
            if not isinstance(chunk, dict) or not isinstance(chunk.get("cleanasr"), str):
                raise ValueError(f"denoised[{i}] is not {{'cleanasr': str, ...}}")
            cleaned += chunk["cleanasr"].split()
        if cleaned:
            words = align_denoised(raw, cleaned)
        else:
            fell_back = bool(raw)
    return ([{"video_id": video_id, "idx": i, "word": w, "start_s": t}
             for i, (w, t) in enumerate(words)], fell_back)


# Keys a JSON-lines shard's objects carry their video id under, in the order tried.
ID_KEYS = ("video_id", "vid_id", "id", "youtube_id")
SHARD_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass
class _Annotation:
    where: str  # the file, or shard:line
    label: str  # the same, by name
    data: Any | None = None  # the parsed object (shards), or None: read the file when needed
    path: Path | None = None


def _annotation_id(path: Path, videos: dict[str, Path]) -> str:
    """`<id>.json` -> id; `<id>.<tag>.json` (`.grover.json`, `.info.json`) -> id when the
    video is `<id>.*` (YouTube ids hold no dots)."""
    stem = path.name[: -len(".json")]
    if stem in videos or "." not in stem:
        return stem
    base = stem.rsplit(".", 1)[0]
    return base if base in videos else stem


def _shard_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a JSON-lines shard, gzipped or not, streamed."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from enumerate(f, start=1)


def scan_yt_temporal(cfg: CorpusConfig) -> Collected:
    """Videos paired with MERLOT annotations: per-video `<id>.json` / `<id>.grover.json` /
    `<id>.info.json`, or JSON-lines shards (`*.jsonl`, `*.jsonl.gz`, one object per video with
    its id), streamed. An id annotated twice keeps the first (in file order, per-video files
    first) and records the other; everything unmatched or unreadable is a quarantine reason."""
    root = _existing_dir(cfg.source[len(YT_PREFIX) :], cfg.source)
    listing = _list_dir(root, cfg.extensions, SHARD_SUFFIXES)
    files = listing.videos
    if not files:
        raise _no_videos(root, listing, cfg, cfg.source)
    videos: dict[str, Path] = {}
    for p in files:
        videos.setdefault(p.stem, p)
    found: dict[str, _Annotation] = {}
    candidates: list[Candidate] = listing.broken("yt_temporal")

    def keep(vid: str, ann: _Annotation) -> None:
        if vid in found:
            candidates.append(Candidate(ann.where, None, "yt_temporal", vid, error=(
                f"duplicate annotation of {vid}: {found[vid].label} is used")))
        else:
            found[vid] = ann

    taken = set(files)
    per_video = [p for p in listing.files if p.suffix.lower() == ".json" and p not in taken]
    for p in sorted(per_video, key=lambda q: (q.name.count("."), str(q))):  # <id>.json first
        keep(_annotation_id(p, videos), _Annotation(display_path(p), p.name, path=p))
    shards = [p for p in listing.files if p.name.lower().endswith(SHARD_SUFFIXES)]
    for shard in shards:
        try:
            for n, line in _shard_lines(shard):
                where = f"{display_path(shard)}:{n}"
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    vid = next(str(obj[k]) for k in ID_KEYS if isinstance(obj, dict) and k in obj)
                except (json.JSONDecodeError, StopIteration):
                    candidates.append(Candidate(where, None, "yt_temporal", None, error=(
                        f"line {n} of {shard.name} is not a JSON object with a video id "
                        f"({' / '.join(ID_KEYS)})")))
                    continue
                if vid in videos or vid not in found:
                    # only the videos found keep their words in memory
                    keep(vid, _Annotation(where, f"{shard.name}:{n}",
                                          obj if vid in videos else None))
        except (OSError, EOFError, UnicodeDecodeError) as e:
            candidates.append(Candidate(display_path(shard), None, "yt_temporal", None,
                                        error=f"annotation shard unreadable: {e}"))
    subtitles: list[dict[str, Any]] = []
    raw_only = 0  # videos whose cleaned words were asked for but absent
    for vid in sorted(set(videos) | set(found)):
        video, ann = videos.get(vid), found.get(vid)
        if video is None:
            assert ann is not None
            candidates.append(Candidate(ann.where, None, "yt_temporal", vid,
                                        error="annotation without a video file"))
            continue
        uri = display_path(video)
        if ann is None:
            candidates.append(Candidate(uri, None, "yt_temporal", vid, error=(
                f"no annotation: {vid}.json, {vid}.grover.json or a line of a .jsonl shard")))
            continue
        try:
            data = ann.data if ann.path is None else json.loads(ann.path.read_text())
            rows, fell_back = subtitle_rows(data, vid, cfg.yt_temporal.text)
        except (ValueError, OSError) as e:
            candidates.append(Candidate(uri, None, "yt_temporal", vid,
                                        error=f"annotation {ann.label} unreadable: {e}"))
            continue
        raw_only += fell_back
        subtitles.extend(rows)
        candidates.append(Candidate(uri, video, "yt_temporal", vid))
    return Collected(candidates, subtitles, ignored=[display_path(p) for p in listing.ignored],
                     raw_subtitles_only=raw_only)


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
