"""Packed frame shards: the pack stage's layout, determinism, resume and quarantine, and the
packed loader's samples against the on-the-fly path."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tvts.config import S3Config
from tvts.data.transforms import batch_to, crop_clip
from tvts.data.tvts_dataset import (
    SampleSpec,
    TVTSCollate,
    TVTSDataset,
    VideoEntry,
    build_samples,
)
from tvts.pack.corpus_run import pack_corpus, plan, settings_for, to_tables
from tvts.pack.shards import packed_indices
from tvts.tables import frame, read_table
from tvts.video.packed import PackedIndex, decode_clips, decode_table, jpeg_batch_decoder

from .conftest import micro

# Lowest PSNR of a packed clip against the same clip decoded on the fly, at the default JPEG
# settings (quality 90, 4:4:4), on the micro corpus' 36-px rendered scenes: frames measured
# >= 36.2 dB (4:2:0 gives 31 dB on these; >= 43.7 dB on the demo's scenes at 268 px).
PSNR_BOUND_DB = 35.0


def _corpus(demo) -> tuple[pl.DataFrame, list[VideoEntry]]:
    rows, entries = [], []
    for side_path in sorted(demo.pretrain_dir.glob("*.json")):
        side = json.loads(side_path.read_text())
        words = [(w["start_s"], w["word"]) for s in side["segments"] if s["kind"] == "event"
                 for w in s["speech"]["words"]]
        uri = str(side_path.with_suffix(".mp4"))
        rows.append({"video_id": side_path.stem, "uri": uri, "duration_s": side["duration_s"],
                     "fps": float(side["fps"]), "width": side["width"], "height": side["height"],
                     "has_audio": True, "source": "demo", "split": "train"})
        entries.append(VideoEntry(side_path.stem, uri, side["duration_s"],
                                  np.array([t for t, _ in words]), [w for _, w in words],
                                  (side["width"], side["height"])))
    return frame(rows, "videos"), entries


def _pack(params, videos: pl.DataFrame, out: Path, workers: int = 1, part=None):
    settings = settings_for(params.pack, params.data.resize_short, params.data.decoder)
    jobs = plan(videos, params.pack, settings, out, S3Config(), str(out / "cache"), part)
    result = pack_corpus(jobs, workers)
    index, quarantine, metrics = to_tables(result, workers)
    return index, quarantine, metrics


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("shard-*.tar"))}


@pytest.fixture(scope="module")
def corpus(micro_demo):
    return _corpus(micro_demo)


@pytest.fixture(scope="module")
def params():
    # the source's frame rate (8 fps): every frame packed, so TSN picks the same ones
    return micro({"pack": {"fps": 8.0}})


@pytest.fixture(scope="module")
def packed(corpus, params, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "shards"
    index, quarantine, metrics = _pack(params, corpus[0], out)
    return out, index, quarantine, metrics


def test_packed_indices_keep_the_frame_shown_at_each_tick():
    times = np.arange(100) / 10.0  # 10 s at 10 fps
    assert packed_indices(times, 4.0).tolist() == [int(k * 2.5) for k in range(40)]
    assert packed_indices(times, 10.0).tolist() == list(range(100))  # not shifted by rounding
    assert packed_indices(times, 25.0).tolist() == list(range(100))  # each frame once
    vfr = np.array([0.0, 0.1, 0.15, 0.9, 1.0, 1.9])  # ends at 2.0 (median frame: 0.1 s)
    assert packed_indices(vfr, 2.0).tolist() == [0, 2, 4]  # shown at 0, 0.5, 1.0 and 1.5


def test_shards_are_plain_tars_and_the_index_points_into_them(packed, corpus):
    out, index, quarantine, metrics = packed
    assert quarantine.height == 0 and index.height == corpus[0].height
    assert metrics["videos_packed"] == index.height and metrics["frames"] == \
        int(index["frames"].sum())
    for row in index.iter_rows(named=True):
        with tarfile.open(out / row["shard"]) as tar:
            members = {m.name: m for m in tar.getmembers()}
            table_member = members[f"{row['video_id']}/frames.npy"]
            assert table_member.offset_data == row["table_offset"]
            table = decode_table(tar.extractfile(table_member).read())
            assert len(table) == row["frames"] == 160  # 20 s at 8 fps: every frame
            for rec in table[:5]:
                m = members[f"{row['video_id']}/{int(rec['frame']):07d}.jpg"]
                assert (m.offset_data, m.size) == (int(rec["offset"]), int(rec["size"]))
                assert tar.extractfile(m).read()[:2] == b"\xff\xd8"  # a JPEG


def test_packed_sample_is_the_on_the_fly_sample_up_to_jpeg_error(packed, corpus, params):
    out, index, _, _ = packed
    _, entries = corpus
    spec = SampleSpec.from_params(params)
    pi = PackedIndex(index, str(out))
    worst = np.inf
    for entry in entries:
        for seed in range(3):
            live = build_samples(entry, spec, np.random.default_rng(seed))[0]
            pk = build_samples(entry, spec, np.random.default_rng(seed),
                               reader=pi.reader(entry.video_id))[0]
            assert pk["text"] == live["text"]
            assert torch.equal(pk["order"], live["order"])
            assert torch.equal(pk["keep"], live["keep"])
            assert torch.equal(pk["frame_indices"], live["frame_indices"])
            assert pk["video"].shape == live["video"].shape
            worst = min(worst, _psnr(pk["video"], live["video"]))
    assert PSNR_BOUND_DB <= worst < np.inf  # lossy, within the bound


def test_device_decoding_gives_the_loader_decoded_batch(packed, corpus, params):
    out, index, _, _ = packed
    _, entries = corpus
    pi = PackedIndex(index, str(out))
    spec = replace(SampleSpec.from_params(params), samples_per_decode=2)
    collate = TVTSCollate(params.model.text.name, params.data.max_text_tokens)
    in_loader = TVTSDataset(entries, spec, seed=3, packed=pi)
    on_device = TVTSDataset(entries, spec, seed=3, packed=pi, device_decode=True)
    a = collate([in_loader[i] for i in range(3)])
    b = collate([on_device[i] for i in range(3)])
    assert "video" not in b and len(b["jpeg_sizes"]) == 6 * spec.num_frames
    assert b["video_jpeg"].shape == (int(b["jpeg_sizes"].sum()),)  # one tensor to pin
    assert b["crop"].shape == (6, 3)
    cpu = torch.device("cpu")
    a_dev, b_dev = batch_to(a, cpu), batch_to(b, cpu)
    assert torch.equal(a_dev["video"], b_dev["video"])  # both libjpeg-turbo
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["keep"], b["keep"])


def test_decode_clips_crops_each_clip_where_asked():
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(4)]
    jpegs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, "JPEG", quality=95)
        jpegs.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    crops = torch.tensor([[0, 0, 32], [8, 18, 32]])
    clips = decode_clips(jpegs, crops, torch.device("cpu"))
    assert clips.shape == (2, 3, 2, 32, 32) and clips.dtype == torch.uint8
    from tvts.video.packed import decode_jpeg_rgb

    second = np.stack([decode_jpeg_rgb(bytes(j.numpy())) for j in jpegs[2:]])
    assert torch.equal(clips[1], crop_clip(second[:, 8:40, 18:50], 32, train=False))
    with pytest.raises(ValueError, match="do not split"):
        decode_clips(jpegs[:3], crops, torch.device("cpu"))
    # the fallback decoder (torchvision's) gives the same pixels as TorchCodec's, when loaded
    from torchvision.io import decode_jpeg

    assert all(torch.equal(a, b) for a, b in zip(
        jpeg_batch_decoder()(jpegs, mode="RGB"), decode_jpeg(jpegs, mode="RGB"), strict=True))


def test_packing_is_deterministic_resumes_and_prunes(corpus, tmp_path):
    videos, _ = corpus
    p = micro()  # 4 fps, 2 shards
    one, two = tmp_path / "one", tmp_path / "two"
    _pack(p, videos, one, workers=1)
    _pack(p, videos, two, workers=2)
    assert _digest(one) == _digest(two) and len(_digest(one)) == 2
    stamps = {f.name: f.stat().st_mtime_ns for f in one.iterdir()}
    _, _, again = _pack(p, videos, one)
    assert again["shards_resumed"] == 2
    assert stamps == {f.name: f.stat().st_mtime_ns for f in one.iterdir()}  # nothing rewritten
    # other settings: every shard is written again; fewer shards: the extra files go
    _, _, other = _pack(micro({"pack": {"jpeg_quality": 80}}), videos, one)
    assert other["shards_resumed"] == 0 and _digest(one) != _digest(two)
    _, _, fewer = _pack(micro({"pack": {"num_shards": 1}}), videos, one)
    assert fewer["shards"] == 1 and fewer["stale_files_removed"] == 2  # shard-00001 .tar/.json
    assert sorted(f.name for f in one.iterdir()) == ["shard-00000.json", "shard-00000.tar"]


def test_a_shard_cut_short_by_a_kill_is_written_again(corpus, tmp_path):
    videos, _ = corpus
    p = micro()
    _pack(p, videos, tmp_path)
    tar = tmp_path / "shard-00000.tar"
    good = tar.read_bytes()
    tar.write_bytes(good[:len(good) // 2])  # the manifest no longer matches the file
    _, _, m = _pack(p, videos, tmp_path)
    assert m["shards_resumed"] == 1 and tar.read_bytes() == good


def test_undecodable_video_is_quarantined_at_pack_time(corpus, tmp_path):
    videos, _ = corpus
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2048)
    row = videos.row(0, named=True) | {"video_id": "broken", "uri": str(bad)}
    with_bad = pl.concat([videos, frame([row], "videos")])
    index, quarantine, metrics = _pack(micro(), with_bad, tmp_path / "s")
    assert quarantine["video_id"].to_list() == ["broken"]
    assert quarantine["stage"].to_list() == ["pack"]
    assert "DecodeError" in quarantine["reason"][0]
    assert "broken" not in index["video_id"].to_list() and index.height == videos.height
    assert metrics["videos_quarantined"] == 1


def test_truncated_shard_and_corrupt_jpeg_are_skipped_with_a_reason(packed, corpus, params,
                                                                    tmp_path):
    out, index, _, _ = packed
    _, entries = corpus
    copy = tmp_path / "shards"
    shutil.copytree(out, copy)
    rows = {r["video_id"]: r for r in index.iter_rows(named=True)}
    # a JPEG of the first video with a flipped byte
    first = entries[0].video_id
    table = PackedIndex(index, str(copy)).reader(first)._table
    data = bytearray((copy / rows[first]["shard"]).read_bytes())
    data[int(table["offset"][40]) + 200] ^= 0xFF
    (copy / rows[first]["shard"]).write_bytes(bytes(data))
    # the shard of another video cut before that video's frame table
    other = next(e.video_id for e in entries if rows[e.video_id]["shard"] !=
                 rows[first]["shard"])
    shard = copy / rows[other]["shard"]
    shard.write_bytes(shard.read_bytes()[:rows[other]["table_offset"] - 1000])
    pi = PackedIndex(index, str(copy))
    spec = SampleSpec.from_params(params)
    with pytest.raises(Exception, match="shard truncated"):
        pi.reader(other)
    reader = pi.reader(first)
    with pytest.raises(Exception, match="CRC mismatch"):
        reader.get_frames(np.arange(35, 45))
    good = [e for e in entries if rows[e.video_id]["shard"] != rows[other]["shard"]
            and e.video_id != first]
    bad_other = next(e for e in entries if e.video_id == other)
    ds = TVTSDataset([bad_other, *good], spec, seed=0, packed=pi)
    item = ds[0]
    assert item["skipped"][0][0] == other and "shard truncated" in item["skipped"][0][1]
    assert item["samples"][0]["video_id"] != other  # the loader went on
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0, collate_fn=TVTSCollate(
        params.model.text.name, params.data.max_text_tokens))
    assert sum(len(b["video_ids"]) for b in loader) == len(ds)


def test_shards_read_from_s3(packed, corpus, params, s3_endpoint, aws_env):
    import boto3

    out, index, _, _ = packed
    _, entries = corpus
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="packs")
    for f in out.glob("shard-*.tar"):
        s3.upload_file(str(f), "packs", f"demo/shards/{f.name}")
    remote = PackedIndex(index, "s3://packs/demo/shards", S3Config(endpoint_url=s3_endpoint))
    local = PackedIndex(index, str(out))
    spec = SampleSpec.from_params(params)
    for e in entries[:2]:
        a = build_samples(e, spec, np.random.default_rng(1), reader=remote.reader(e.video_id))
        b = build_samples(e, spec, np.random.default_rng(1), reader=local.reader(e.video_id))
        assert torch.equal(a[0]["video"], b[0]["video"])
    s3.delete_object(Bucket="packs", Key=f"demo/shards/{index['shard'][0]}")
    with pytest.raises(Exception, match="cannot read the frame table"):
        remote.reader(index["video_id"][0])


def test_pack_stage_disabled_and_enabled(corpus, tmp_path):
    from tvts.stages import pack as pack_stage
    from tvts.tables import write_table

    videos, _ = corpus
    write_table(videos, tmp_path / "videos.parquet", "videos")
    off = micro({"pack": {"enabled": False}})
    msg = pack_stage.run(off, tmp_path / "videos.parquet", tmp_path / "pack",
                         tmp_path / "m" / "pack.json")
    assert "disabled" in msg and read_table(tmp_path / "pack/index.parquet",
                                            "pack_index").height == 0
    on = micro()
    # a part of a fan-out writes its shards only; the whole stage then merges them
    part = pack_stage.run(on, tmp_path / "videos.parquet", tmp_path / "pack",
                          tmp_path / "m" / "pack.json", shards=(0, 2))
    assert "shards 0/2" in part and (tmp_path / "pack/shards/shard-00000.tar").exists()
    assert not (tmp_path / "pack/shards/shard-00001.tar").exists()
    msg = pack_stage.run(on, tmp_path / "videos.parquet", tmp_path / "pack",
                         tmp_path / "m" / "pack.json")
    record = json.loads((tmp_path / "m/details/pack.json").read_text())
    assert record["videos_packed"] == videos.height and record["shards_resumed"] == 1
    assert record["gb_per_video_hour"] > 0 and "1 already done" in msg


def test_training_refuses_frames_packed_at_another_size(packed, tmp_path):
    from tvts.errors import UserError
    from tvts.stages.common import packed_frames
    from tvts.tables import write_table

    _, index, _, _ = packed
    write_table(index, tmp_path / "index.parquet", "pack_index")
    ok, on_device = packed_frames(micro(), "cpu", tmp_path)
    assert len(ok) == index.height and not on_device
    assert packed_frames(micro(), "cuda", tmp_path)[1]  # auto: on a GPU
    bigger = micro({"data": {"resize_short": 40}})
    with pytest.raises(UserError, match=r"short side .* data.resize_short = 40: pack again"):
        packed_frames(bigger, "cpu", tmp_path)


def test_training_decodes_packed_jpegs_on_the_device(micro_demo, tmp_path):
    """`pack.decode: device` through the trainer: the workers send JPEG bytes, `batch_to`
    decodes them where the model runs (here the CPU), and the run trains and validates."""
    from tvts.stages import pack as pack_stage
    from tvts.stages import pretrain as pretrain_stage
    from tvts.tables import write_table

    videos, entries = _corpus(micro_demo)
    words = [{"video_id": e.video_id, "idx": i, "word": w, "start_s": float(t),
              "end_s": float(t) + 0.3, "confidence": 1.0}
             for e in entries for i, (t, w) in enumerate(zip(e.times, e.words, strict=True))]
    write_table(videos, tmp_path / "videos.parquet", "videos")
    write_table(frame(words, "words"), tmp_path / "words.parquet", "words")
    params = micro({"pack": {"decode": "device"},
                      "pretrain": {"loader_workers": 1, "epochs": 1}})
    pack_stage.run(params, tmp_path / "videos.parquet", tmp_path / "pack",
                   tmp_path / "pack.json")
    msg = pretrain_stage.run(params, tmp_path / "videos.parquet", tmp_path / "words.parquet",
                             tmp_path / "out", tmp_path / "pretrain.json", None, None,
                             tmp_path / "report", tmp_path / "pack")
    record = json.loads((tmp_path / "details" / "pretrain.json").read_text())
    assert record["steps"] > 0 and record["skipped_videos"] == 0, msg
    assert 0.0 <= record["val_sort_acc"] <= 1.0


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _first_shard(corpus, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The micro corpus packed into tmp_path: (videos, params, index, first video's row, its
    shard, the shard's bytes)."""
    videos, _ = corpus
    p = micro()
    index, _, _ = _pack(p, videos, tmp_path)
    row = index.row(0, named=True)
    tar = tmp_path / row["shard"]
    return videos, p, index, row, tar, tar.read_bytes()


def test_a_damaged_frame_table_is_rewritten_by_the_next_pack(corpus, tmp_path):
    """Same size, same manifest: before, `pack` kept the shard as "already done"."""
    videos, p, _, row, tar, good = _first_shard(corpus, tmp_path)
    _flip(tar, row["table_offset"] + row["table_size"] - 3)
    _, _, m = _pack(p, videos, tmp_path)
    assert m["shards_repaired"] == 1 and m["shards_resumed"] == 1
    assert tar.read_bytes() == good


def test_a_jpeg_a_reader_found_corrupt_is_rewritten_and_verify_finds_it_unreported(
        corpus, tmp_path):
    videos, p, index, row, tar, good = _first_shard(corpus, tmp_path)
    table = PackedIndex(index, str(tmp_path)).reader(row["video_id"])._table
    _flip(tar, int(table["offset"][1]) + 100)
    # the frame tables still match: a plain run keeps the shard, --verify does not
    _, _, kept = _pack(p, videos, tmp_path)
    assert kept["shards_repaired"] == 0 and tar.read_bytes() != good
    settings = settings_for(p.pack, p.data.resize_short, p.data.decoder)
    jobs = plan(videos, p.pack, settings, tmp_path, S3Config(), str(tmp_path / "c"))
    verified = pack_corpus(jobs, 1, verify=True)
    assert list(verified.repaired) == [row["shard"]] and tar.read_bytes() == good
    # a reader that meets the damage leaves a note; the next plain run rewrites the shard
    _flip(tar, int(table["offset"][1]) + 100)
    with pytest.raises(Exception, match="CRC mismatch"):
        PackedIndex(index, str(tmp_path)).reader(row["video_id"]).get_frames(np.arange(2))
    marker = tmp_path / (row["shard"] + ".corrupt")
    assert "CRC mismatch" in marker.read_text()
    _, _, healed = _pack(p, videos, tmp_path)
    assert healed["shards_repaired"] == 1 and tar.read_bytes() == good
    assert not marker.exists()


def test_a_set_whose_only_video_fails_names_it_and_the_fix(packed, corpus, params, tmp_path):
    """Before: `RuntimeError: 16 videos in a row gave no sample` with a traceback."""
    from tvts.data.tvts_dataset import NoSampleError

    out, index, _, _ = packed
    _, entries = corpus
    copy = tmp_path / "shards"
    shutil.copytree(out, copy)
    row = next(r for r in index.iter_rows(named=True) if r["video_id"] == entries[0].video_id)
    _flip(copy / row["shard"], row["table_offset"] + 5)
    ds = TVTSDataset([entries[0]], SampleSpec.from_params(params), seed=0,
                     packed=PackedIndex(index, str(copy)))
    with pytest.raises(NoSampleError) as direct:
        ds[0]
    text = str(direct.value)
    assert entries[0].video_id in text and "CRC mismatch" in text and "dvc repro pack" in text
    assert "1 draws in a row" in text  # stops once every video of the set failed
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=TVTSCollate(
        params.model.text.name, params.data.max_text_tokens))
    with pytest.raises(NoSampleError) as through_worker:
        next(iter(loader))
    assert str(through_worker.value) == text  # the worker's traceback is not the message


def test_temporary_files_of_killed_writes_are_swept_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from tvts.storage import atomic_path, sweep_leftovers, temp_owner

    shards = tmp_path / "data" / "pack" / "shards"
    with atomic_path(shards / "shard-00000.tar") as tmp:
        tmp.write_bytes(b"x")
        live = tmp  # this process writes it: kept
        assert oct(tmp.stat().st_mode & 0o777) == "0o600"
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        dead = shards / live.name.replace(temp_owner(), temp_owner(int(dead_pid)))
        dead.write_bytes(b"y" * 100)
        (shards / ".other.tmp").write_bytes(b"z")  # no owner, fresh: kept (may be another host's)
        old = shards / ".shard-00001.tar.abc123.tmp"  # the old naming, a day old: swept
        old.write_bytes(b"w")
        os.utime(old, (1, 1))
        metrics_tmp = tmp_path / "metrics" / f".pack.json.{temp_owner(int(dead_pid))}q.tmp"
        metrics_tmp.parent.mkdir()
        metrics_tmp.write_text("{")
        removed = sweep_leftovers([shards, tmp_path / "metrics" / "pack.json",
                                   tmp_path / "data" / "pack" / "index.parquet"])
        assert sorted(removed) == sorted([dead, old, metrics_tmp])
        assert live.exists() and (shards / ".other.tmp").exists()
