"""Packed ASR: several videos' speech decoded as one window, each word sent back to its video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvts.asr import corpus_run, packing
from tvts.asr.corpus_run import Task, packing_groups, process_group
from tvts.asr.engines import SAMPLE_RATE, Word
from tvts.asr.scoring import align, demo_reference
from tvts.config import resolve
from tvts.sharding import shard_of
from tvts.tables import read_table


def test_windows_fill_greedily_and_keep_a_long_video_alone():
    assert packing.windows([5, 5, 5, 30, 5], 12) == [[0, 1], [2], [3], [4]]
    assert packing.windows([4, 4, 4], 12) == [[0, 1, 2]]
    assert packing.windows([], 12) == []


def test_words_go_back_to_their_video_and_time():
    sr = SAMPLE_RATE
    a = np.ones(10 * sr, np.float32)
    b = np.full(10 * sr, 2.0, np.float32)
    audio, pieces = packing.pack([a, b], [[(1.0, 2.0), (6.0, 7.5)], [(3.0, 4.0)]], gap_s=0.5)
    # a's pieces at 0-1 s and 1.5-3 s, b's at 3.5-4.5 s, each followed by 0.5 s of silence
    assert len(audio) == round((1.0 + 0.5 + 1.5 + 0.5 + 1.0 + 0.5) * sr)
    assert audio[round(3.6 * sr)] == 2.0 and audio[round(1.2 * sr)] == 0.0
    words = [Word("one", 0.1, 0.5, 0.9), Word("two", 1.6, 2.0, 0.9),
             Word("gap", 3.25, 3.45, 0.9),  # in the gap after a's last piece, nearer b's
             Word("three", 3.6, 4.9, 0.9)]  # runs past b's piece: clamped to it
    got = packing.unpack(words, pieces, 2)
    assert [(w.word, w.start_s, w.end_s) for w in got[0]] == [("one", 1.1, 1.5),
                                                               ("two", 6.1, 6.5)]
    assert [(w.word, w.start_s, w.end_s) for w in got[1]] == [("gap", 3.0, 3.0),
                                                              ("three", 3.1, 4.0)]


def _task(vid: str) -> Task:
    return Task(vid, f"/x/{vid}.mp4", True, 10.0)


def test_groups_depend_on_the_ids_alone():
    cfg = resolve({}).asr.model_copy(update={"num_shards": 3, "pack_videos": 3})
    tasks = [_task(f"v{i:03d}") for i in range(40)]
    groups = packing_groups(tasks, cfg)
    assert sorted(t.video_id for g in groups for t in g) == sorted(t.video_id for t in tasks)
    for g in groups:
        assert 1 <= len(g) <= 3 and len({shard_of(t.video_id, 3) for t in g}) == 1
    # a run over some shards (a fan-out part), or over the tasks in another order, forms the
    # groups the whole run forms
    part = [t for t in reversed(tasks) if shard_of(t.video_id, 3) != 1]
    assert packing_groups(part, cfg) == [g for g in groups if shard_of(g[0].video_id, 3) != 1]
    off = cfg.model_copy(update={"pack_videos": 1})
    assert packing_groups(tasks, off) == [[t] for t in tasks]


@pytest.fixture(scope="module")
def micro_tasks(micro_params, micro_corpus_stage):
    videos = read_table(micro_corpus_stage / "corpus" / "videos.parquet", "videos").sort("uri")
    return micro_params, [Task(r["video_id"], r["uri"], r["has_audio"], r["duration_s"])
                          for r in videos.head(4).iter_rows(named=True)]


class _NoPacking:
    """An engine that fails on a packed window (decodes single videos as the real one)."""

    name = "no-packing"

    def __init__(self, real):
        self.real, self.cfg = real, real.cfg

    def words(self, audio, speech):
        if speech is None:
            raise RuntimeError("packed window refused")
        return self.real.words(audio, speech)

    def transcribe(self, audio):
        return self.real.transcribe(audio)


@pytest.mark.slow
def test_packed_videos_get_their_own_words(micro_tasks, monkeypatch):
    """Four demo videos through packed windows: each video's words match its own script
    (not a neighbour's) and start where they are said; a window the engine fails on is
    decoded again video by video, each video then done or failed on its own."""
    params, tasks = micro_tasks
    cfg = params.asr.model_copy(update={"engine": "faster-whisper", "pack_videos": 4})
    corpus_run._init_worker(cfg, params.corpus.s3, "")
    records = process_group(tasks)
    assert [r["video_id"] for r in records] == [t.video_id for t in tasks]
    assert max(r["packed_with"] for r in records) >= 1, "no window held two videos"
    for task, rec in zip(tasks, records, strict=True):
        truth = demo_reference(json.loads(Path(task.uri).with_suffix(".json").read_text()))
        a = align(truth.words, [w[0] for w in rec["words"]])
        assert a.wer <= 0.15, (task.video_id, rec["words"])
        starts = {w: s for w, s in zip(truth.words, truth.starts, strict=True)}
        assert all(abs(s - starts.get(w, s)) < 1.0 for w, s, _, _ in rec["words"]
                   if truth.words.count(w) == 1)
    only = process_group(tasks, frozenset([tasks[1].video_id]))
    assert [r["video_id"] for r in only] == [tasks[1].video_id]
    assert only[0]["words"] == records[1]["words"]  # the same window, the same words

    monkeypatch.setattr(corpus_run, "_engine", _NoPacking(corpus_run._engine))
    alone = process_group(tasks)
    assert all(r["status"] == "done" and r["packed_with"] == 0 and r["words"] for r in alone)
