"""The corpus stage on every source, with the bad inputs a real corpus has."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tvts.corpus.probe import ProbeError, probe_video
from tvts.errors import UserError
from tvts.stages import corpus as corpus_stage
from tvts.tables import read_table

from .conftest import make_video, micro, stage_record


def _run(tmp_path: Path, source: str, **corpus):
    params = micro({"corpus": {"source": source, "workers": 1,
                                                     "cache_dir": str(tmp_path / "cache"),
                                                     **corpus}})
    out = tmp_path / "out"
    summary = corpus_stage.run(params, out, tmp_path / "metrics.json")
    videos = read_table(out / "videos.parquet", "videos")
    quarantine = read_table(out / "quarantine.parquet", "quarantine")
    metrics = stage_record(tmp_path / "metrics.json")
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


@pytest.mark.parametrize(("cut", "reason"), [
    (0.4, r"truncated: frames stop at 1\.25 s of 4\.00 s"),
    (2 / 3, r"truncated or corrupt: frames decode up to 2\.38 s of 4\.00 s, then fail"),
])
def test_truncated_faststart_reason_gives_the_last_decodable_time(tmp_path, cut, reason):
    # faststart: the index at the front lists frames the file no longer holds, so a seek
    # near the end finds nothing; the reason must still say where frames really stop
    data = make_video(tmp_path / "src.mp4", seconds=4.0, fps=8, seed=4, faststart=True
                      ).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ProbeError, match=reason):
        probe_video(tmp_path / "cut.mp4")


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


@pytest.mark.parametrize("prefix", ["", "yt_temporal:"])
def test_a_source_without_videos_fails_at_the_corpus_stage(tmp_path, prefix):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"holds no video files \(1 other file\(s\).*"
                                        r"corpus\.extensions"):
        _run(tmp_path, prefix + str(src))
    assert not (tmp_path / "out" / "videos.parquet").exists()


def test_a_source_whose_every_file_is_bad_fails_with_the_reasons(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"")
    (src / "b.mp4").write_text("text")
    with pytest.raises(UserError, match=r"(?s)none of its 2 file\(s\) is a usable video.*"
                                        r"1 x empty file.*b\.mp4"):
        _run(tmp_path, str(src))
    assert not (tmp_path / "out" / "videos.parquet").exists()


def test_links_are_followed_and_broken_ones_quarantined(tmp_path):
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    make_video(src / "a.mp4", seed=1)
    make_video(elsewhere / "b.mp4", seed=2)
    (src / "linked").symlink_to(elsewhere, target_is_directory=True)  # a linked folder
    (src / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (src / "self.mp4").symlink_to(src / "self.mp4")
    (src / "sub" / "up").symlink_to(src, target_is_directory=True)  # a loop
    os.mkfifo(src / "pipe.mp4")  # reading it would block
    _, videos, quarantine, metrics = _run(tmp_path, str(src))
    assert sorted(Path(u).name for u in videos["uri"]) == ["a.mp4", "b.mp4"]
    reasons = {Path(u).name: r for u, r in zip(quarantine["uri"], quarantine["reason"],
                                               strict=True)}
    assert reasons == {
        "dangling.mp4": f"dangling symbolic link: dangling.mp4 -> {tmp_path / 'gone.mp4'}",
        "self.mp4": f"symbolic link loop: self.mp4 -> {src / 'self.mp4'}",
        "up": f"symbolic link loop: up -> {src} leads back to {src}, a directory above it",
        "pipe.mp4": "not a regular file (a FIFO, socket or device)",
    }
    assert metrics["quarantined"] == 4 and metrics["videos"] == 2


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
    _, videos, quarantine, _ = _run(tmp_path, f"yt_temporal:{root}",
                                    yt_temporal={"text": "raw"})
    assert videos["video_id"].to_list() == ["abcDEF12345"]
    assert videos["source"].to_list() == ["yt_temporal"]
    reasons = dict(zip(quarantine["video_id"], quarantine["reason"], strict=True))
    assert reasons["noAnnotation"].startswith("no annotation: noAnnotation.json")
    assert reasons["badJson0000"].startswith("annotation badJson0000.json unreadable")
    assert reasons["videoMissing"] == "annotation without a video file"
    subs = read_table(tmp_path / "out" / "subtitles.parquet", "subtitles")
    assert subs.to_dicts() == [
        {"video_id": "abcDEF12345", "idx": 0, "word": "hello", "start_s": 0.2},
        {"video_id": "abcDEF12345", "idx": 1, "word": "world", "start_s": 0.9},
    ]


def test_yt_temporal_denoised_words_take_the_subtitle_timing(tmp_path):
    root = tmp_path / "yt"
    root.mkdir()
    raw = [("hey", 0.0), ("guys", 0.4), ("so", 1.0), ("todya", 1.5), ("we", 2.0),
           ("uh", 2.2), ("gonna", 2.5), ("[Music]", 3.0), ("cook", 3.5)]
    annotation = {"subtitles": [{"word": w, "time": t} for w, t in raw],
                  "denoised": [{"cleanasr": "Hey guys, so today we're", "start": 0, "end": 2},
                               {"cleanasr": "going to cook.", "start": 2, "end": 4}]}
    for seed, vid in enumerate(("cleanVid001", "noCleanVid1")):
        make_video(root / f"{vid}.mp4", seconds=4.0, seed=seed)
    (root / "cleanVid001.json").write_text(json.dumps(annotation))
    (root / "noCleanVid1.json").write_text(json.dumps({"subtitles": annotation["subtitles"]}))
    _, _, _, metrics = _run(tmp_path, f"yt_temporal:{root}")
    subs = read_table(tmp_path / "out" / "subtitles.parquet", "subtitles").sort("idx")
    clean = subs.filter(pl.col("video_id") == "cleanVid001")
    got = list(zip(clean["word"], clean["start_s"], strict=True))
    assert got == [("Hey", 0.0), ("guys,", 0.4), ("so", 1.0), ("today", 1.5),
                   ("we're", 2.0), ("going", 2.2), ("to", 2.5), ("cook.", 3.5)]
    # without cleaned words the subtitle words are used, and counted
    raw_only = subs.filter(pl.col("video_id") == "noCleanVid1")["word"].to_list()
    assert raw_only == [w for w, _ in raw] and metrics["raw_subtitles_only"] == 1
    _run(tmp_path, f"yt_temporal:{root}", yt_temporal={"text": "raw"})
    subs = read_table(tmp_path / "out" / "subtitles.parquet", "subtitles").sort("idx")
    assert subs.filter(pl.col("video_id") == "cleanVid001")["word"].to_list() == [
        w for w, _ in raw]


def _subs(words):  # type: ignore[no-untyped-def]
    return [{"word": w, "time": 0.3 * i} for i, w in enumerate(words)]


def test_yt_temporal_published_layouts(tmp_path):
    """MERLOT's `<id>.grover.json` and `<id>.info.json`, a gzipped JSON-lines shard (two
    videos, a malformed line, an id twice, an id without a video), first annotation wins."""
    root = tmp_path / "yt"
    root.mkdir()
    for i, vid in enumerate(["groverVid01", "infoVid0001", "shardVid001", "shardVid002",
                             "twiceVid001"]):
        make_video(root / f"{vid}.mp4", seconds=2.0, seed=10 + i)
    (root / "groverVid01.grover.json").write_text(json.dumps({"subtitles": _subs(["a", "b"])}))
    (root / "infoVid0001.info.json").write_text(json.dumps({"subtitles": _subs(["c"])}))
    (root / "twiceVid001.json").write_text(json.dumps({"subtitles": _subs(["first"])}))
    lines = [json.dumps({"video_id": "shardVid001", "subtitles": _subs(["d", "e"])}),
             "{not json",
             json.dumps({"vid_id": "shardVid002", "subtitles": _subs(["f"]),
                         "denoised": [], "info": {}}),
             json.dumps({"video_id": "twiceVid001", "subtitles": _subs(["second"])}),
             json.dumps({"video_id": "noSuchVideo", "subtitles": []})]
    with gzip.open(root / "part-000.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    (root / "notes.txt").write_text("a file that is not a video")
    _, videos, quarantine, metrics = _run(tmp_path, f"yt_temporal:{root}")
    assert videos["video_id"].to_list() == ["groverVid01", "infoVid0001", "shardVid001",
                                            "shardVid002", "twiceVid001"]
    subs = read_table(tmp_path / "out" / "subtitles.parquet", "subtitles")
    words = {v: g.sort("idx")["word"].to_list() for (v,), g in subs.group_by(["video_id"])}
    assert words == {"groverVid01": ["a", "b"], "infoVid0001": ["c"],
                     "shardVid001": ["d", "e"], "shardVid002": ["f"], "twiceVid001": ["first"]}
    reasons = list(zip(quarantine["uri"], quarantine["reason"], strict=True))
    assert any(u.endswith("part-000.jsonl.gz:2") and "line 2 of part-000.jsonl.gz" in r
               for u, r in reasons), reasons
    assert any(u.endswith("part-000.jsonl.gz:4") and r.startswith(
        "duplicate annotation of twiceVid001: twiceVid001.json is used") for u, r in reasons)
    assert any(u.endswith("part-000.jsonl.gz:5") and r == "annotation without a video file"
               for u, r in reasons)
    assert len(reasons) == 3
    # the shard is read, not ignored; the stray file is named
    assert metrics["ignored_files"] == 1 and metrics["ignored_examples"][0].endswith("notes.txt")
    assert (tmp_path / "out" / "ignored_files.txt").read_text().strip().endswith("notes.txt")


def _mpeg2(path: Path, seconds: float = 2.0, fps: int = 25) -> Path:
    """A real MPEG-2 program stream (.mpeg), as broadcast captures and old DVDs carry."""
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mpeg") as out:
        stream = out.add_stream("mpeg2video", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_directory_source_takes_mpeg2_by_default(tmp_path):
    from tvts.config import VIDEO_SUFFIXES, CorpusConfig

    src = tmp_path / "src"
    src.mkdir()
    _mpeg2(src / "broadcast.mpeg")
    assert CorpusConfig().extensions == list(VIDEO_SUFFIXES)
    common = {".mpeg", ".mpg", ".ts", ".m2ts", ".ogv", ".flv", ".wmv", ".3gp"}
    assert common <= set(VIDEO_SUFFIXES)
    _, videos, quarantine, metrics = _run(tmp_path, str(src))
    assert [Path(u).name for u in videos["uri"]] == ["broadcast.mpeg"], quarantine
    assert videos["duration_s"][0] == pytest.approx(2.0, abs=0.2)
    assert metrics["ignored_files"] == 0


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


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_mpeg2_frames_decode_right_with_either_backend(tmp_path, backend):
    """An MPEG-2 program stream starts its clock late and seeks imprecisely: frame times
    start at 0 and every frame asked for is the one a plain pass from the start gives."""
    import av

    from tvts.video.decoders import open_video

    path = _mpeg2(tmp_path / "clip.mpeg")
    reader = open_video(path, backend, 36)
    assert reader.frame_times[0] == 0.0 and reader.frame_times[-1] == pytest.approx(1.96)
    frames = reader.get_frames(np.array([0, 25, 49, 3]))
    with av.open(str(path)) as c:
        plain = [f.to_ndarray(format="rgb24", width=48, height=36) for f in c.decode(video=0)]
    for got, i in zip(frames, [0, 25, 49, 3], strict=True):
        np.testing.assert_array_equal(got, plain[i])
