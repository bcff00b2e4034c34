"""The corpus stage on every source, with the bad inputs a real corpus has."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from tvts.config import resolve
from tvts.corpus.probe import ProbeError, probe_video
from tvts.errors import UserError
from tvts.stages import corpus as corpus_stage
from tvts.tables import read_table

from .conftest import make_video


def _run(tmp_path: Path, source: str, **corpus):
    params = resolve({"profile": "micro", "corpus": {"source": source, "workers": 1,
                                                     "cache_dir": str(tmp_path / "cache"),
                                                     **corpus}})
    out = tmp_path / "out"
    summary = corpus_stage.run(params, out, tmp_path / "metrics.json")
    videos = read_table(out / "videos.parquet", "videos")
    quarantine = read_table(out / "quarantine.parquet", "quarantine")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    return summary, videos, quarantine, metrics


@pytest.fixture(scope="module")
def messy_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("messy")
    make_video(d / "good.mp4", seed=1)
    (d / "nested" / "deeper").mkdir(parents=True)
    make_video(d / "nested" / "deeper" / "Good2.MOV", seed=2)
    shutil.copy(d / "good.mp4", d / "nested" / "copy_of_good.mp4")
    make_video(d / "silent.mp4", audio=False, seed=3)
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file, not a video\n")
    data = (d / "good.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    fs = make_video(d / "fs_src.mp4", seconds=4.0, seed=4, faststart=True)
    data = fs.read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(data[: len(data) * 2 // 3])
    fs.unlink()
    make_video(d / "tiny.mp4", seconds=0.25, seed=5)
    (d / "readme.txt").write_text("not a video extension: ignored\n")
    (d / ".hidden.mp4").write_bytes(b"")
    return d


def test_probe_reads_real_properties(tmp_path):
    p = probe_video(make_video(tmp_path / "a.mp4", seconds=3.0, fps=8, size=(64, 48)))
    assert (p.width, p.height, p.fps, p.has_audio) == (64, 48, 8.0, True)
    assert p.duration_s == pytest.approx(3.0, abs=0.15)
    assert probe_video(make_video(tmp_path / "b.mp4", audio=False)).has_audio is False


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.mp4", "empty file"),
        ("notes.mp4", "not a readable video"),
        ("truncated.mp4", "not a readable video"),
        ("truncated_faststart.mp4", "truncated"),
    ],
)
def test_probe_rejects_bad_files(messy_dir, name, reason):
    with pytest.raises(ProbeError, match=reason):
        probe_video(messy_dir / name)


def test_local_directory_source(messy_dir, tmp_path):
    summary, videos, quarantine, metrics = _run(tmp_path, str(messy_dir))
    kept = {Path(u).name for u in videos["uri"]}
    assert kept == {"good.mp4", "Good2.MOV", "silent.mp4"}
    reasons = {Path(u).name: r for u, r in zip(quarantine["uri"], quarantine["reason"],
                                               strict=True)}
    assert reasons["empty.mp4"].startswith("empty file")
    assert reasons["notes.mp4"].startswith("not a readable video")
    assert reasons["truncated.mp4"].startswith("not a readable video")
    assert reasons["truncated_faststart.mp4"].startswith("truncated")
    assert reasons["tiny.mp4"].startswith("too short")
    assert "duplicate of" in reasons["copy_of_good.mp4"]
    assert len(quarantine) == 6 and ".hidden.mp4" not in reasons
    # every candidate is accounted for: nothing dropped silently
    assert len(videos) + len(quarantine) == 9
    # the duplicate shares the original's id
    good_id = videos.filter(pl.col("uri").str.ends_with("/good.mp4"))["video_id"][0]
    dup_id = quarantine.filter(pl.col("uri").str.ends_with("copy_of_good.mp4"))["video_id"][0]
    assert good_id == dup_id
    # no audio: kept and flagged
    silent = videos.filter(pl.col("uri").str.ends_with("silent.mp4"))
    assert silent["has_audio"].to_list() == [False]
    assert metrics["without_audio"] == 1 and metrics["ignored_files"] == 1
    assert set(videos["source"]) == {"dir"} and set(quarantine["stage"]) == {"corpus"}
    assert "3 videos" in summary and "6 quarantined" in summary


def test_ids_are_stable_across_runs_and_paths(messy_dir, tmp_path):
    _, first, _, _ = _run(tmp_path / "a", str(messy_dir))
    moved = tmp_path / "moved"
    shutil.copytree(messy_dir, moved)
    _, second, _, _ = _run(tmp_path / "b", str(moved))
    assert sorted(first["video_id"]) == sorted(second["video_id"])
    assert first.sort("video_id")["split"].to_list() == second.sort("video_id")["split"].to_list()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"corpus.source = .*is not a directory"):
        _run(tmp_path, str(tmp_path / "nope"))


def test_parallel_probing_matches_serial(messy_dir, tmp_path):
    _, serial, q1, _ = _run(tmp_path / "s", str(messy_dir))
    _, parallel, q2, _ = _run(tmp_path / "p", str(messy_dir), workers=2)
    assert serial.equals(parallel) and q1.equals(q2)


# ---------------------------------------------------------------- YT-Temporal
def test_yt_temporal_source(tmp_path):
    root = tmp_path / "yt"
    (root / "videos").mkdir(parents=True)
    (root / "annotations").mkdir()
    make_video(root / "videos" / "abcDEF12345.mp4", seconds=3.0, seed=1)
    (root / "annotations" / "abcDEF12345.json").write_text(json.dumps({
        "info": {"duration": 3.0, "title": "<b>a title</b>"},
        "subtitles": [{"word": "hello", "time": 0.2}, {"word": "world", "time": 0.9}],
        "denoised": [{"cleanasr": "Hello world.", "start": 0.2, "end": 1.4}],
    }))
    make_video(root / "videos" / "noAnnotation.mp4", seed=2)
    make_video(root / "videos" / "badJson0000.mp4", seed=3)
    (root / "annotations" / "badJson0000.json").write_text('{"subtitles": [{"word": 1}]}')
    (root / "annotations" / "videoMissing.json").write_text('{"subtitles": []}')
    _, videos, quarantine, _ = _run(tmp_path, f"yt_temporal:{root}")
    assert videos["video_id"].to_list() == ["abcDEF12345"]
    assert videos["source"].to_list() == ["yt_temporal"]
    reasons = dict(zip(quarantine["video_id"], quarantine["reason"], strict=True))
    assert reasons["noAnnotation"] == "no annotation file noAnnotation.json"
    assert reasons["badJson0000"].startswith("annotation badJson0000.json unreadable")
    assert reasons["videoMissing"] == "annotation without a video file"
    subs = read_table(tmp_path / "out" / "subtitles.parquet", "subtitles")
    assert subs.to_dicts() == [
        {"video_id": "abcDEF12345", "idx": 0, "word": "hello", "start_s": 0.2},
        {"video_id": "abcDEF12345", "idx": 1, "word": "world", "start_s": 0.9},
    ]


# ---------------------------------------------------------------- S3 (a real local endpoint)
def test_s3_source(s3_endpoint, aws_env, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="corpus")
    good = make_video(tmp_path / "g.mp4", seed=7)
    client.upload_file(str(good), "corpus", "raw/a/good.mp4")
    client.upload_file(str(good), "corpus", "raw/b/same_content.mp4")
    client.upload_file(str(make_video(tmp_path / "s.mp4", audio=False, seed=8)), "corpus",
                       "raw/silent.mp4")
    client.put_object(Bucket="corpus", Key="raw/corrupt.mp4", Body=b"\x00\x01garbage" * 50)
    client.put_object(Bucket="corpus", Key="raw/archived.mp4", Body=good.read_bytes(),
                      StorageClass="GLACIER")
    client.put_object(Bucket="corpus", Key="raw/notes.txt", Body=b"ignored")
    client.put_object(Bucket="corpus", Key="elsewhere/other.mp4", Body=good.read_bytes())

    s3cfg = {"s3": {"endpoint_url": s3_endpoint}}
    _, videos, quarantine, metrics = _run(tmp_path, "s3://corpus/raw/", **s3cfg)
    assert sorted(videos["uri"]) == ["s3://corpus/raw/a/good.mp4", "s3://corpus/raw/silent.mp4"]
    assert set(videos["source"]) == {"s3"}
    reasons = dict(zip(quarantine["uri"], quarantine["reason"], strict=True))
    assert reasons["s3://corpus/raw/archived.mp4"].startswith("unreadable S3 object")
    assert "InvalidObjectState" in reasons["s3://corpus/raw/archived.mp4"]
    assert reasons["s3://corpus/raw/corrupt.mp4"].startswith("not a readable video")
    assert reasons["s3://corpus/raw/b/same_content.mp4"].startswith(
        "duplicate of s3://corpus/raw/a/good.mp4")
    assert metrics["ignored_files"] == 1

    # content-addressed cache: same content under two keys is stored once...
    cached = sorted((tmp_path / "cache" / "s3").iterdir())
    assert len(cached) == 3  # good (once), silent, corrupt
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    # ...and a re-run downloads nothing
    _, again, _, _ = _run(tmp_path, "s3://corpus/raw/", **s3cfg)
    assert again.equals(videos)
    assert {p: p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "s3").iterdir())} \
        == stamps


def test_s3_bucket_missing_is_a_clear_error(s3_endpoint, aws_env, tmp_path):
    with pytest.raises(UserError, match="cannot list the bucket"):
        _run(tmp_path, "s3://no-such-bucket/x", s3={"endpoint_url": s3_endpoint})


# ---------------------------------------------------------------- demo
def test_demo_source_tables(tmp_path, micro_params):
    _summary, videos, quarantine, metrics = _run(tmp_path, "demo")
    n = micro_params.corpus.demo.num_videos
    assert len(videos) == n and len(quarantine) == 0
    assert videos["has_audio"].all() and set(videos["source"]) == {"demo"}
    truth = read_table(tmp_path / "out" / "leak_truth.parquet", "leak_truth")
    assert len(truth) == metrics["planted_leaks"] > 0
    assert set(truth["video_id"]) <= set(videos["video_id"])
    assert (tmp_path / "out" / "params.resolved.yaml").exists()
    assert not (tmp_path / "out" / ".demo.partial").exists()
