"""Cheap fingerprints of what the corpus and downstream stages read: names, sizes and
modification times of local files, keys, sizes and ETags of S3 objects — never the content.

The `sources` stage writes them on every `dvc repro`; the corpus and downstream stages depend
on them, so DVC reruns those exactly when a file was added, removed, changed or re-linked,
without hashing terabytes of video.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tvts.config import CorpusConfig, DownstreamConfig, DownstreamSource, SvoSource
from tvts.corpus.sources import YT_PREFIX, source_kind
from tvts.storage import list_s3, s3_client, walk_files


class _Digest:
    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=16)
        self.files = self.bytes = self.broken = 0

    def add(self, *fields: object) -> None:
        self.hash.update(("\t".join(str(f) for f in fields) + "\n").encode())

    def summary(self, **about: Any) -> dict[str, Any]:
        return {**about, "files": self.files, "bytes": self.bytes, "broken": self.broken,
                "digest": self.hash.hexdigest()}


def directory_listing(root: str | Path) -> dict[str, Any]:
    """Every file under `root` (links followed, as the stages read it) by relative name, size
    and mtime, and every entry that leads to no file, by name and reason."""
    root = Path(root).expanduser()
    if not root.is_dir():
        # the stage reading it names the problem; a directory that appears later changes this
        return {"directory": str(root), "missing": True}
    digest = _Digest()
    files, unlisted = walk_files(root)
    for path in files:
        try:
            st = path.stat()
        except OSError as e:  # gone between the walk and now
            digest.add("unreadable", path.relative_to(root).as_posix(), e.strerror)
            digest.broken += 1
            continue
        digest.add(path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)
        digest.files += 1
        digest.bytes += st.st_size
    for u in unlisted:
        digest.add("unlisted", u.path.relative_to(root).as_posix(), u.reason)
        digest.broken += 1
    return digest.summary(directory=os.path.abspath(root))


def s3_listing(cfg: CorpusConfig) -> dict[str, Any]:
    digest = _Digest()
    for obj in sorted(list_s3(s3_client(cfg.s3), cfg.source), key=lambda o: o.key):
        digest.add(obj.key, obj.size, obj.etag, obj.storage_class)
        digest.files += 1
        digest.bytes += obj.size
    return digest.summary(prefix=cfg.source)


def corpus_listing(cfg: CorpusConfig) -> dict[str, Any]:
    """What `corpus.source` holds now (the demo is generated from params: nothing to list)."""
    kind = source_kind(cfg.source)
    if kind == "demo":
        return {"source": "demo"}
    if kind == "s3":
        return {"source": "s3", **s3_listing(cfg)}
    root = cfg.source[len(YT_PREFIX):] if kind == "yt_temporal" else cfg.source
    return {"source": kind, **directory_listing(root)}


def downstream_listing(cfg: DownstreamConfig, svo: str | SvoSource | None) -> dict[str, Any]:
    """Per set: its directories' listings (demo sets are made by the corpus stage, which the
    downstream stage depends on already); `svo`: downstream.svo resolved
    (`Params.svo_source`)."""
    out: dict[str, Any] = {}
    for name, source in sorted(cfg.sets.items()):
        if isinstance(source, DownstreamSource):
            out[name] = {"root": directory_listing(source.root)}
            if source.videos:
                out[name]["videos"] = directory_listing(source.videos)
        elif source == "demo":
            out[name] = {"demo": name}
        else:
            out[name] = {"root": directory_listing(source)}
    if isinstance(svo, SvoSource):  # the SVO probes: a reserved name, not a set's
        out["svo_probes"] = {"root": directory_listing(svo.root)}
        if svo.images:
            out["svo_probes"]["images"] = directory_listing(svo.images)
    return out
