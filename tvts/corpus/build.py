"""From candidates to the videos and quarantine tables: hash, probe, deduplicate, split."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from tvts.config import CorpusConfig
from tvts.corpus.probe import ProbeError, content_hash, probe_video
from tvts.corpus.sources import Candidate
from tvts.parallel import process_map
from tvts.tables import frame

STAGE = "corpus"


@dataclass(frozen=True)
class Inspected:
    candidate: Candidate
    digest: str | None
    probe: dict[str, Any] | None
    error: str | None


def _inspect(args: tuple[Candidate, bool]) -> Inspected:
    cand, verify = args
    if cand.error is not None or cand.path is None:
        return Inspected(cand, None, None, cand.error or "no local file")
    try:
        digest = content_hash(cand.path)
    except OSError as e:
        return Inspected(cand, None, None, f"unreadable file: {e.strerror or e}")
    try:
        p = probe_video(cand.path, verify_decode=verify)
    except ProbeError as e:
        return Inspected(cand, digest, None, str(e))
    except Exception as e:  # a decoder crash on one file must not stop the corpus
        return Inspected(cand, digest, None, f"probe failed: {type(e).__name__}: {e}")
    return Inspected(cand, digest, p.__dict__, None)


def inspect_all(cands: list[Candidate], cfg: CorpusConfig,
                progress: Callable[[int], None]) -> list[Inspected]:
    jobs = [(c, cfg.verify_decode) for c in cands]
    return process_map(_inspect, jobs, cfg.workers, progress, chunksize=4, min_jobs=4)


def video_id_for(digest: str | None, source_id: str | None, uri: str) -> str:
    """The source's own id when it has one, else the content hash (stable across paths)."""
    if source_id:
        return source_id
    if digest:
        return f"v{digest[:20]}"
    return "u" + hashlib.blake2b(uri.encode(), digest_size=10).hexdigest()


def split_of(key: str, val_fraction: float, test_fraction: float = 0.0, seed: int = 0) -> str:
    """`train`, `val` (chooses checkpoints) or `test` (only reported) from a seeded hash of
    `key` (a video id, or its split group) alone: it never changes when the corpus grows."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(),
                       "big") / 2**64
    return "val" if h < val_fraction else "test" if h < val_fraction + test_fraction else "train"


def tabulate(items: list[Inspected], cfg: CorpusConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    videos: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    first_by_digest: dict[str, str] = {}
    for it in sorted(items, key=lambda i: i.candidate.uri):
        c = it.candidate
        vid = video_id_for(it.digest, c.source_id, c.uri)
        if it.error is not None:
            quarantine.append({"video_id": vid, "uri": c.uri, "stage": STAGE, "reason": it.error})
            continue
        assert it.probe is not None and it.digest is not None
        if it.digest in first_by_digest:
            quarantine.append({"video_id": vid, "uri": c.uri, "stage": STAGE,
                               "reason": f"duplicate of {first_by_digest[it.digest]} "
                                         "(same content)"})
            continue
        first_by_digest[it.digest] = c.uri
        if it.probe["duration_s"] < cfg.min_duration_s:
            quarantine.append({"video_id": vid, "uri": c.uri, "stage": STAGE,
                               "reason": f"too short: {it.probe['duration_s']:.2f} s < "
                                         f"corpus.min_duration_s = {cfg.min_duration_s}"})
            continue
        videos.append({"video_id": vid, "uri": c.uri, **it.probe, "source": c.source,
                       "split": split_of(c.split_group or vid, cfg.val_fraction,
                                         cfg.test_fraction, cfg.split_seed)})
    return frame(videos, "videos"), frame(quarantine, "quarantine")
