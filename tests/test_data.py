"""The TVTS sample pipeline: windows, shuffle labels, TSN indices, decoding, transforms, masks."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import polars as pl
import pytest
import torch

from tvts.config import resolve
from tvts.data.frames import time_to_index, tsn_indices
from tvts.data.transforms import IMAGENET_MEAN, IMAGENET_STD, batch_to, crop_clip, normalize
from tvts.data.tvts_dataset import SampleSpec, TVTSCollate, TVTSDataset, VideoEntry, build_samples
from tvts.data.windows import NoValidSample, draw_windows, shuffle, window_starts
from tvts.video.decoders import DecodeError, open_video

from .conftest import make_video


def test_window_formula():
    # S_k = s + (k - 1)(l + gap), E_k = S_k + l
    assert window_starts(2.0, 4, 3.0, 1.0).tolist() == [2.0, 6.0, 10.0, 14.0]


def _speech(duration: float, every: float = 0.4):
    times = np.arange(0.1, duration, every)
    return times, [f"w{i}" for i in range(len(times))]


def test_windows_lie_inside_the_video_and_hold_their_words():
    rng = np.random.default_rng(0)
    times, words = _speech(30.0)
    for _ in range(50):
        w = draw_windows(rng, 30.0, times, words, 4, (2.0, 3.0), 1.0, 20)
        assert w.span[0] >= 0.0 and w.span[1] <= 30.0 + 1e-9
        assert 2.0 <= w.length <= 3.0
        for s, t in zip(w.starts, w.transcripts, strict=True):
            expected = [x for x, tm in zip(words, times, strict=True) if s <= tm <= s + w.length]
            assert t == expected and t


def test_short_video_and_empty_windows_are_reported_not_filled():
    rng = np.random.default_rng(0)
    times, words = _speech(10.0)
    with pytest.raises(NoValidSample, match="too short"):
        draw_windows(rng, 10.0, times, words, 4, (2.0, 3.0), 1.0, 5)
    # all speech in the first 2 s: windows 2..4 are always empty
    with pytest.raises(NoValidSample, match="no draw of 4 windows out of 7"):
        draw_windows(rng, 30.0, np.array([0.1, 0.5, 1.0, 1.5]), ["a", "b", "c", "d"], 4,
                     (2.0, 2.0), 1.0, 7)
    with pytest.raises(NoValidSample, match="only 2 words"):
        draw_windows(rng, 30.0, np.array([1.0, 5.0]), ["a", "b"], 4, (2.0, 2.0), 1.0, 7)


def test_exactly_fitting_video_edge():
    rng = np.random.default_rng(1)
    times = np.array([0.0, 3.0, 6.0, 9.0])  # one word at each window start, span = 11 s
    w = draw_windows(rng, 11.0, times, ["a", "b", "c", "d"], 4, (2.0, 2.0), 1.0, 200)
    assert w.transcripts == [["a"], ["b"], ["c"], ["d"]]


def test_shuffle_labels_are_true_positions():
    rng = np.random.default_rng(3)
    original = [["first"], ["second"], ["third"], ["fourth"]]
    for _ in range(20):
        shuffled, order = shuffle(rng, original)
        for j, t in enumerate(shuffled):
            assert original[order[j]] == t
    assert sorted(order.tolist()) == [0, 1, 2, 3]


def test_tsn_train_and_eval_indices():
    times = np.arange(100) / 10.0  # 10 fps
    ev = tsn_indices(times, 2.0, 5.0, 4, train=False)
    # centres of 4 segments of [2, 5]: 2.375, 3.125, 3.875, 4.625 s
    assert ev.tolist() == [23, 31, 38, 46]
    rng = np.random.default_rng(0)
    for _ in range(20):
        tr = tsn_indices(times, 2.0, 5.0, 4, train=True, rng=rng)
        edges = np.linspace(2.0, 5.0, 5)
        assert all(int(edges[i] * 10) <= tr[i] <= int(edges[i + 1] * 10) for i in range(4))
    # M not dividing the span, and more frames than the span has: repeats, never out of range
    many = tsn_indices(times, 9.5, 9.9, 16, train=False)
    assert many.min() >= 95 and many.max() <= 99 and len(many) == 16


def test_time_to_index_uses_real_timestamps():
    times = np.array([0.0, 0.5, 0.6, 2.0, 2.1])  # variable frame rate
    assert time_to_index(times, np.array([0.0, 0.55, 1.9, 2.05, 9.0])).tolist() == [0, 1, 2, 3, 4]


def _vfr_video(path, pts_ms):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        s.time_base = Fraction(1, 1000)
        for i, p in enumerate(pts_ms):
            img = np.full((48, 64, 3), (i * 40) % 256, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = p, Fraction(1, 1000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decoders_report_real_frame_times(tmp_path, backend):
    pts = [0, 100, 150, 400, 1000, 1033]
    r = open_video(_vfr_video(tmp_path / "vfr.mp4", pts), backend)
    assert np.allclose(r.frame_times, np.array(pts) / 1000, atol=1e-3)


def test_both_decoders_give_the_same_frames(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=6.0, fps=10, size=(96, 64))
    idx = np.array([0, 37, 5, 59, 20, 21])
    a = open_video(path, "decord").get_frames(idx)
    b = open_video(path, "pyav").get_frames(idx)
    assert a.shape == (6, 64, 96, 3) and np.array_equal(a, b)
    # resized on decode (short side 32): different scalers, the same picture
    ra = open_video(path, "decord", 32).get_frames(idx).astype(float)
    rb = open_video(path, "pyav", 32).get_frames(idx).astype(float)
    assert ra.shape == rb.shape == (6, 32, 48, 3)
    pooled = [x.reshape(6, 4, 8, 6, 8, 3).mean(axis=(2, 4)) for x in (ra, rb)]
    assert np.abs(pooled[0] - pooled[1]).max() < 6


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_known_source_size_spares_the_probe_and_gives_the_same_frames(tmp_path, backend):
    path = make_video(tmp_path / "v.mp4", seconds=3.0, fps=10, size=(160, 120))
    idx = np.array([3, 17, 29])
    for short in (72, 36):  # decoded resized, and (decord, < 64 px) resized afterwards
        probed = open_video(path, backend, short)
        hinted = open_video(path, backend, short, source_size=(160, 120))
        assert (hinted.width, hinted.height) == (probed.width, probed.height)
        assert np.array_equal(hinted.get_frames(idx), probed.get_frames(idx))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_every_frame_of_a_short_clip_up_to_the_last(tmp_path, backend):
    # PyAV once failed here with "End of file": a new decode() after the stream's end
    path = make_video(tmp_path / "short.mp4", seconds=1.25, fps=8, size=(64, 48))
    r = open_video(path, backend)
    n = len(r.frame_times)
    assert n == 10
    assert r.get_frames(np.arange(n)).shape == (n, 48, 64, 3)
    assert r.get_frames(np.array([n - 1, 0, n - 2])).shape == (3, 48, 64, 3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_corrupt_file_raises_a_decode_error(tmp_path, backend):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(DecodeError):
        open_video(bad, backend)


def test_transform_shapes_ranges_and_one_crop_per_clip():
    frames = np.zeros((4, 40, 50, 3), np.uint8)
    frames[:, 10:20, 10:20] = 255  # a white square, fixed across frames
    rng = np.random.default_rng(0)
    clip = crop_clip(frames, 32, train=True, rng=rng)
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.uint8
    assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(4))  # same crop everywhere
    centre = crop_clip(frames, 32, train=False)
    assert torch.equal(centre, crop_clip(frames, 32, train=False))
    assert torch.equal(centre, torch.from_numpy(frames[:, 4:36, 9:41]).permute(3, 0, 1, 2))
    x = normalize(clip[None])
    assert x.shape == (1, 3, 4, 32, 32) and x.dtype == torch.float32
    lo = (0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    hi = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    for c in range(3):
        assert x[0, c].min() == pytest.approx(lo[c], abs=1e-5)
        assert x[0, c].max() == pytest.approx(hi[c], abs=1e-5)
    moved = batch_to({"video": clip[None], "video_ids": ["a"]}, torch.device("cpu"))
    assert torch.equal(moved["video"], x) and moved["video_ids"] == ["a"]


@pytest.fixture
def spec():
    return SampleSpec(num_frames=4, frame_size=32, resize_short=36, decoder="pyav",
                      num_transcripts=3, window_s=(1.0, 1.5), gap_s=0.5, mask_ratio=0.5,
                      tubelet=2, patch_size=8, samples_per_decode=1, max_tries=50)


@pytest.fixture
def entry(tmp_path):
    path = make_video(tmp_path / "talk.mp4", seconds=10.0, fps=10, size=(64, 48))
    times, words = _speech(10.0, 0.3)
    return VideoEntry("vtalk", str(path), 10.0, times, words)


def test_sample_masks_and_determinism(entry, spec):
    a = build_samples(entry, spec, np.random.default_rng(5))[0]
    b = build_samples(entry, spec, np.random.default_rng(5))[0]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["keep"], b["keep"])
    assert a["text"] == b["text"] and torch.equal(a["order"], b["order"])
    assert a["video"].shape == (3, 4, 32, 32)
    assert a["keep"].shape == (2, 8)  # 2 slices, 16 patches, half kept
    assert all(len(set(row.tolist())) == 8 for row in a["keep"])
    c = build_samples(entry, spec, np.random.default_rng(6))[0]
    assert not torch.equal(a["video"], c["video"]) or a["text"] != c["text"]


def test_decode_once_sample_many(entry, spec):
    from dataclasses import replace

    many = build_samples(entry, replace(spec, samples_per_decode=3), np.random.default_rng(0))
    assert len(many) == 3
    assert len({tuple(s["text"]) for s in many}) == 1  # same transcripts
    assert len({tuple(s["frame_indices"].tolist()) for s in many}) > 1  # other frames


def test_corrupt_video_is_skipped_with_a_reason_and_resampled(entry, spec, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    broken = VideoEntry("vbroken", str(bad), 10.0, entry.times, entry.words)
    ds = TVTSDataset([broken, entry], spec, seed=0)
    item = ds[0]
    assert item["skipped"] and item["skipped"][0][0] == "vbroken"
    assert "DecodeError" in item["skipped"][0][1]
    assert item["samples"][0]["video_id"] == "vtalk"
    assert item["samples"][0]["video"].float().abs().sum() > 0  # a real clip, not zeros


def test_collate_tokenises_in_the_loader(entry, spec):
    ds = TVTSDataset([entry], spec, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1,
                                         collate_fn=TVTSCollate("bundled:minilm-l6", 16))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[:2] == (1, 3) and batch["input_ids"].shape[2] <= 16
    assert batch["order"].shape == (1, 3) and batch["video"].shape == (1, 3, 4, 32, 32)


def test_spec_from_params():
    p = resolve({"profile": "paper"})
    s = SampleSpec.from_params(p)
    assert (s.num_frames, s.frame_size, s.slices, s.patches) == (16, 224, 8, 196)
    assert s.mask_ratio == 0.75 and SampleSpec.from_params(p, mask_ratio=0.0).mask_ratio == 0


def test_entries_skip_videos_without_words():
    from tvts.data.tvts_dataset import load_entries

    videos = pl.DataFrame({"video_id": ["a", "b"], "uri": ["x", "y"], "duration_s": [1.0, 2.0]})
    words = pl.DataFrame({"video_id": ["a", "a"], "start_s": [0.5, 0.1], "word": ["two", "one"]})
    entries = load_entries(videos, words)
    assert [e.video_id for e in entries] == ["a"] and entries[0].words == ["one", "two"]


def test_labelled_clips_multi_view(tmp_path):
    from tvts.data.labelled import LabelledClips, LabelledItem, spatial_offsets

    path = make_video(tmp_path / "action.mp4", seconds=4.0, fps=10, size=(80, 48))
    items = [LabelledItem("a", str(path), 3)]
    ev = LabelledClips(items, frames=4, frame_size=32, resize_short=40, decoder="pyav",
                       train=False, temporal_views=2, spatial_views=3)[0]
    assert ev["clips"].shape == (6, 3, 4, 32, 32) and ev["label"] == 3
    # 3 spatial views differ (left / centre / right), the 2 temporal views differ too
    assert not torch.equal(ev["clips"][0], ev["clips"][2])
    assert not torch.equal(ev["clips"][0], ev["clips"][3])
    assert spatial_offsets(66, 32, 3) == [0, 17, 34] and spatial_offsets(66, 32, 1) == [17]
    tr = LabelledClips(items, 4, 32, 40, "pyav", train=True)[0]
    assert tr["clips"].shape == (1, 3, 4, 32, 32)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk")
    out = LabelledClips([LabelledItem("b", str(bad), 0)], 4, 32, 40, "pyav", False)[0]
    assert out["clips"] is None and out["skipped"][0][0] == "b"


@pytest.mark.parametrize(("videos", "lent"), [(2, 1), (3, 1), (4, 2), (19, 2), (30, 3)])
def test_a_corpus_without_validation_lends_enough_videos_for_figures_that_can_miss(videos, lent):
    """One held-out video made R@1 100 and the other-video control empty whatever the model
    (the micro profile's headline never moved)."""
    from tvts.data.tvts_dataset import VideoEntry, split_entries

    entries = [VideoEntry(f"v{i}", f"v{i}.mp4", 16.0, np.zeros(0), [], (64, 64))
               for i in range(videos)]
    table = pl.DataFrame({"video_id": [e.video_id for e in entries], "split": ["train"] * videos})
    splits = split_entries(entries, table)
    assert len(splits.val) == lent and len(splits.train) == videos - lent
