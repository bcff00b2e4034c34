"""Transcribe a corpus: per-video work fanned out to worker processes, results journaled by
shard in the main process, then merged into the words and quarantine tables."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tvts.asr import packing
from tvts.asr.engines import (
    SAMPLE_RATE,
    Engine,
    Transcript,
    finish,
    load_engine,
    speech_segments,
)
from tvts.asr.journal import ShardJournal
from tvts.config import AsrConfig, S3Config
from tvts.sharding import shard_of
from tvts.storage import local_file
from tvts.tables import frame
from tvts.video.audio import read_audio_float

STAGE = "asr"
# Settings that do not change a transcript, so they do not invalidate finished records.
_RUNTIME_KEYS = {"workers", "threads", "num_shards", "model_cache_dir", "device",
                 "retry_failed"}


def fingerprint(cfg: AsrConfig) -> str:
    keys = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _RUNTIME_KEYS}
    return hashlib.blake2b(json.dumps(keys, sort_keys=True).encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Task:
    video_id: str
    uri: str
    has_audio: bool
    duration_s: float
    # YT-Temporal words (word, start) to import instead of transcribing
    subtitles: tuple[tuple[str, float], ...] | None = None


# ---------------------------------------------------------------- per video (in workers)
_engine: Engine | None = None
_ctx: dict[str, Any] = {}


def _init_worker(cfg: AsrConfig, s3: S3Config, cache_dir: str) -> None:
    global _engine
    _ctx.update(cfg=cfg, s3=s3, cache_dir=cache_dir)
    _engine = load_engine(cfg)


def import_subtitles(words: tuple[tuple[str, float], ...], duration_s: float,
                     max_word_s: float) -> list[list[Any]]:
    """MERLOT words have start times only: end = next start, capped, within the video."""
    rows = []
    for i, (w, start) in enumerate(words):
        nxt = words[i + 1][1] if i + 1 < len(words) else duration_s
        end = min(max(nxt, start), start + max_word_s, max(duration_s, start))
        rows.append([w, start, end, None])
    return rows


def _read(task: Task) -> tuple[dict[str, Any], np.ndarray | None]:
    """The video's record so far and its audio; no audio: the record is final (imported
    words, skipped or failed)."""
    cfg: AsrConfig = _ctx["cfg"]
    rec: dict[str, Any] = {"video_id": task.video_id, "uri": task.uri,
                           "audio_s": task.duration_s,
                           "io_s": 0.0, "engine_s": 0.0}
    if task.subtitles is not None:
        words = import_subtitles(task.subtitles, task.duration_s, cfg.import_max_word_s)
        return {**rec, "status": "done", "engine": "import", "words": words}, None
    if not task.has_audio:
        return {**rec, "status": "skipped", "reason": "no audio track: nothing to transcribe"}, None
    t0 = time.perf_counter()
    try:
        audio = read_audio_float(local_file(task.uri, _ctx["s3"], _ctx["cache_dir"]),
                                 SAMPLE_RATE)
    except Exception as e:
        return {**rec, "status": "failed",
                "reason": f"audio unreadable: {type(e).__name__}: {e}"}, None
    rec["io_s"] = time.perf_counter() - t0
    if audio is None:
        return {**rec, "status": "skipped", "reason": "no audio track: nothing to transcribe"}, None
    if audio.size == 0:
        return {**rec, "status": "failed", "reason": "audio track has no samples"}, None
    return {**rec, "audio_s": audio.size / SAMPLE_RATE}, audio


def _finished(rec: dict[str, Any], tr: Transcript, engine_s: float, packed: int = 1
              ) -> dict[str, Any]:
    assert _engine is not None
    return {**rec, "status": "done", "engine": _engine.name, "engine_s": engine_s,
            "packed_with": packed - 1,
            "dropped_outside_speech": tr.dropped_outside_speech, "repeats_cut": tr.repeats_cut,
            "words": [[w.word, round(w.start_s, 3), round(w.end_s, 3), round(w.confidence, 4)]
                      for w in tr.words]}


def _alone(rec: dict[str, Any], audio: np.ndarray,
           spans: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """One video decoded on its own; `spans`: its VAD speech spans when already found (a
    packing group's), so the VAD does not run twice (their time is in rec["engine_s"])."""
    t0 = time.perf_counter()
    try:
        assert _engine is not None
        if spans is None:
            tr = _engine.transcribe(audio)
        else:
            speech = None if _ctx["cfg"].vad == "off" else spans
            tr = finish(_engine.words(audio, speech), speech, _ctx["cfg"])
    except Exception as e:
        return {**rec, "status": "failed",
                "reason": f"transcription failed: {type(e).__name__}: {e}"}
    before = rec.get("engine_s", 0.0) if spans is not None else 0.0
    return _finished(rec, tr, before + time.perf_counter() - t0)


def process(task: Task) -> dict[str, Any]:
    rec, audio = _read(task)
    return rec if audio is None else _alone(rec, audio)


def process_group(group: list[Task], wanted: frozenset[str] | None = None
                  ) -> list[dict[str, Any]]:
    """The records of a packing group's videos (those in `wanted`; all when None): each
    video's speech spans, windows of several videos' speech decoded once, a window that
    fails decoded again video by video (its failures are then each video's own)."""
    cfg: AsrConfig = _ctx["cfg"]
    if len(group) == 1:
        return [process(group[0])]
    assert _engine is not None
    records: dict[str, dict[str, Any]] = {}
    heard: list[tuple[dict[str, Any], np.ndarray, list[tuple[float, float]]]] = []
    for task in group:
        rec, audio = _read(task)
        if audio is None:
            records[task.video_id] = rec
            continue
        t0 = time.perf_counter()
        spans = speech_segments(audio, cfg)
        rec["engine_s"] = time.perf_counter() - t0
        if not spans:
            records[task.video_id] = _finished(rec, Transcript([]), rec["engine_s"])
            continue
        heard.append((rec, audio, spans))
    lengths = [packing.speech_length(spans, cfg.pack_gap_s) for _, _, spans in heard]
    for members in packing.windows(lengths, cfg.pack_s):
        if len(members) == 1:
            rec, audio, spans = heard[members[0]]
            records[rec["video_id"]] = _alone(rec, audio, spans)
            continue
        audio, pieces = packing.pack([heard[m][1] for m in members],
                                     [heard[m][2] for m in members], cfg.pack_gap_s)
        t0 = time.perf_counter()
        try:
            raw = packing.unpack(_engine.words(audio, None), pieces, len(members))
        except Exception:
            for m in members:
                rec, audio, spans = heard[m]
                records[rec["video_id"]] = _alone(rec, audio, spans)
            continue
        seconds = time.perf_counter() - t0
        total = sum(lengths[m] for m in members)
        for m, words in zip(members, raw, strict=True):
            rec, _, spans = heard[m]
            share = seconds * lengths[m] / total  # the window's time, by speech length
            records[rec["video_id"]] = _finished(rec, finish(words, spans, cfg),
                                                 rec["engine_s"] + share, len(members))
    return [records[t.video_id] for t in group if wanted is None or t.video_id in wanted]


def packing_groups(tasks: list[Task], cfg: AsrConfig) -> list[list[Task]]:
    """Tasks in the groups packing decodes together: by shard, in video-id order,
    `pack_videos` at a time; fixed by the ids alone, so a resumed run or a run over some of
    the shards forms the same groups (and decodes the same windows)."""
    if cfg.pack_videos <= 1 or cfg.vad == "off":
        return [[t] for t in tasks]
    by_shard: dict[int, list[Task]] = {}
    for t in sorted(tasks, key=lambda t: t.video_id):
        by_shard.setdefault(shard_of(t.video_id, cfg.num_shards), []).append(t)
    n = cfg.pack_videos
    return [ts[i:i + n] for _, ts in sorted(by_shard.items()) for i in range(0, len(ts), n)]


# ---------------------------------------------------------------- the corpus (main process)
def tasks_for(videos: pl.DataFrame, subtitles: pl.DataFrame) -> list[Task]:
    subs: dict[str, list[tuple[str, float]]] = {}
    for vid, word, start in subtitles.sort(["video_id", "idx"]).select(
            "video_id", "word", "start_s").iter_rows():
        subs.setdefault(vid, []).append((word, start))
    return [Task(r["video_id"], r["uri"], r["has_audio"], r["duration_s"],
                 tuple(subs[r["video_id"]]) if r["video_id"] in subs else None)
            for r in videos.sort("video_id").iter_rows(named=True)]


@dataclass
class RunResult:
    records: dict[str, dict[str, Any]]
    resumed: int  # finished in an earlier run
    write_s: float
    retried: int = 0  # failed in an earlier run, tried again


def transcribe_corpus(tasks: list[Task], cfg: AsrConfig, s3: S3Config, cache_dir: str,
                      journal_dir: str | Path, progress: Callable[[int], None] | None = None
                      ) -> RunResult:
    journal = ShardJournal(journal_dir, cfg.num_shards, fingerprint(cfg))
    with journal.lock(shard_of(t.video_id, cfg.num_shards) for t in tasks):
        return _transcribe(tasks, cfg, s3, cache_dir, journal, progress)


def _transcribe(tasks: list[Task], cfg: AsrConfig, s3: S3Config, cache_dir: str,
                journal: ShardJournal, progress: Callable[[int], None] | None) -> RunResult:
    done = journal.load()
    wanted = {t.video_id for t in tasks}
    # a failure may be transient (an S3 hiccup, memory): tried again on the next run
    retry = {v for v in wanted & set(done)
             if cfg.retry_failed and done[v]["status"] == "failed"}
    resumed = len(wanted & set(done)) - len(retry)
    todo = [t for t in tasks if t.video_id not in done or t.video_id in retry]
    tick = progress or (lambda n: None)
    tick(resumed)
    write_s = 0.0

    def record(rec: dict[str, Any]) -> None:
        nonlocal write_s
        t0 = time.perf_counter()
        journal.append(rec)
        write_s += time.perf_counter() - t0
        done[rec["video_id"]] = rec
        tick(1)

    todo_ids = {t.video_id for t in todo}
    # a group is decoded whole (its windows do not depend on what an earlier run finished);
    # only its videos still to do are recorded
    groups = [(g, frozenset(t.video_id for t in g) & todo_ids)
              for g in packing_groups(tasks, cfg)]
    groups = [(g, ids) for g, ids in groups if ids]
    needs_engine = any(t.subtitles is None and t.has_audio for t in todo)
    if cfg.workers <= 1 or len(groups) <= 1:
        if todo:
            if needs_engine:
                _init_worker(cfg, s3, cache_dir)
            else:
                _ctx.update(cfg=cfg, s3=s3, cache_dir=cache_dir)
        for group, ids in groups:
            for rec in process_group(group, ids):
                record(rec)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(cfg, s3, cache_dir)) as pool:
            futures = [pool.submit(process_group, g, ids) for g, ids in groups]
            for fut in as_completed(futures):
                for rec in fut.result():
                    record(rec)
    return RunResult({k: v for k, v in done.items() if k in wanted}, resumed, write_s,
                     len(retry))


def to_tables(result: RunResult) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    words, quarantine = [], []
    totals = {"audio_s": 0.0, "io_s": 0.0, "engine_s": 0.0, "dropped_outside_speech": 0,
              "repeats_cut": 0}
    status = {"done": 0, "skipped": 0, "failed": 0}
    for vid in sorted(result.records):
        rec = result.records[vid]
        status[rec["status"]] += 1
        if rec["status"] != "done":
            quarantine.append({"video_id": vid, "uri": rec.get("uri"), "stage": STAGE,
                               "reason": rec["reason"]})
            continue
        for k in totals:
            totals[k] += rec.get(k, 0) or 0
        for i, (w, s, e, c) in enumerate(rec["words"]):
            words.append({"video_id": vid, "idx": i, "word": w, "start_s": s, "end_s": e,
                          "confidence": c})
    engine_s = totals["engine_s"]
    metrics = {
        "videos_done": status["done"], "videos_skipped": status["skipped"],
        "videos_failed": status["failed"], "videos_resumed": result.resumed,
        "videos_retried": result.retried,
        "words": len(words), "audio_hours": round(totals["audio_s"] / 3600, 4),
        "dropped_outside_speech": totals["dropped_outside_speech"],
        "repeats_cut": totals["repeats_cut"],
        "real_time_factor": round(engine_s / totals["audio_s"], 4) if totals["audio_s"] else None,
        # the stage's own work (reading audio, writing shards) relative to the engine's
        "overhead_share": round((totals["io_s"] + result.write_s) / engine_s, 4)
        if engine_s else None,
    }
    return frame(words, "words"), frame(quarantine, "quarantine"), metrics
