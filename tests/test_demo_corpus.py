"""The demo generator: deterministic, narrated in sync with what is seen, real formats, leaks."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from tvts.corpus.demo.generate import SSV2_TEMPLATES, generate_demo
from tvts.corpus.demo.media import read_frames
from tvts.corpus.demo.scene import COLOURS
from tvts.corpus.probe import probe_video
from tvts.video.audio import read_audio


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _sidecars(demo) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(demo.pretrain_dir.glob("*.json"))]


def test_same_seed_same_bytes_other_seed_differs(micro_demo, micro_params, tmp_path):
    cfg = micro_params.corpus.demo
    root = micro_demo.pretrain_dir.parent
    again = generate_demo(cfg, 0, tmp_path / "again", workers=2)  # worker count is irrelevant
    assert _digests(root) == _digests(again.pretrain_dir.parent)
    other = generate_demo(cfg.model_copy(update={"num_videos": 1}), 1, tmp_path / "other")
    first = "pretrain/vid_0000.mp4"
    assert _digests(other.pretrain_dir.parent)[first] != _digests(root)[first]


def test_pretrain_videos_are_real_mp4_h264_aac(micro_demo, micro_params):
    cfg = micro_params.corpus.demo
    videos = sorted(micro_demo.pretrain_dir.glob("*.mp4"))
    assert len(videos) == cfg.num_videos
    for v in videos:
        with av.open(str(v)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.audio[0].codec_context.name == "aac"
        p = probe_video(v)
        assert (p.width, p.height, p.fps) == (cfg.width, cfg.height, cfg.fps)
        assert p.duration_s == pytest.approx(cfg.duration_s, abs=0.2)


def test_sidecar_timeline_is_consistent(micro_demo):
    for side in _sidecars(micro_demo):
        segs = side["segments"]
        assert segs, side["file"]
        ends = [s["end_s"] for s in segs]
        starts = [s["start_s"] for s in segs]
        assert all(e <= side["duration_s"] for e in ends)
        assert all(b >= a for a, b in zip(ends[:-1], starts[1:], strict=True)), "overlap"
        for s in segs:
            if s["kind"] != "event":
                continue
            sp = s["speech"]
            # narrated while it happens
            assert s["start_s"] <= sp["start_s"] < sp["end_s"] <= s["end_s"]
            assert " ".join(w["word"] for w in sp["words"]) == s["sentence"]
            assert s["sentence"].startswith(f"the {s['object']} ")


def test_audio_holds_the_narration_and_silence_between(micro_demo):
    for side in _sidecars(micro_demo):
        sr = side["sample_rate"]
        audio = read_audio(micro_demo.pretrain_dir / side["file"], sr).astype(np.float64)
        assert len(audio) / sr == pytest.approx(side["duration_s"], abs=0.15)
        speech = np.zeros(len(audio), bool)
        quiet = np.zeros(len(audio), bool)
        for s in side["segments"]:
            a, b = int(s["start_s"] * sr), int(s["end_s"] * sr)
            if s["kind"] == "event":
                sp = s["speech"]
                speech[int(sp["start_s"] * sr) : int(sp["end_s"] * sr)] = True
            elif s["kind"] == "pause":
                quiet[a:b] = True
        if s := [x for x in side["segments"] if x["kind"] == "leak"]:
            for lk in s:  # a copied clip may bring its own sound
                speech[int(lk["start_s"] * sr) : int(lk["end_s"] * sr)] = True
        energy = audio**2
        # the speech spans hold (nearly) all of the sound
        assert energy[speech].sum() / energy.sum() > 0.97, side["file"]
        rms_speech = np.sqrt(energy[speech].mean())
        assert rms_speech > 1000
        if quiet.any():
            assert np.sqrt(energy[quiet].mean()) < rms_speech / 30
        # each sentence is audible for most of its span
        for x in side["segments"]:
            if x["kind"] == "event":
                sp = x["speech"]
                seg = energy[int(sp["start_s"] * sr) : int(sp["end_s"] * sr)]
                assert np.sqrt(seg.mean()) > 500, (side["file"], x["sentence"])


def test_some_pauses_exist(micro_params, tmp_path):
    cfg = micro_params.corpus.demo.model_copy(update={"num_videos": 2, "silence_prob": 0.5})
    out = generate_demo(cfg, 3, tmp_path)
    kinds = [s["kind"] for side in _sidecars(out) for s in side["segments"]]
    assert "pause" in kinds and "event" in kinds


def test_neighbouring_events_are_about_different_objects(micro_demo, micro_params):
    """The narrator moves on: within any run of (objects - 1) events no object comes twice."""
    n = micro_params.corpus.demo.objects_per_video
    runs = 0
    for side in _sidecars(micro_demo):
        said = [s["object"] for s in side["segments"] if s["kind"] == "event"]
        for i in range(len(said) - n + 2):
            window = said[i:i + n - 1]
            assert len(set(window)) == len(window), (side["file"], said)
            runs += 1
    assert runs >= 10


def _colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    ref = np.asarray(COLOURS[colour], np.int32)
    return np.abs(frame.astype(np.int32) - ref).sum(axis=2) < 90


def test_what_is_said_is_what_is_seen(micro_demo):
    """Said to move left: its pixels end up further left; said to grow: more of them."""
    checked = 0
    for side in _sidecars(micro_demo):
        frames = read_frames(micro_demo.pretrain_dir / side["file"])
        fps = side["fps"]
        for s in side["segments"]:
            if s["kind"] != "event":
                continue
            colour = s["object"].split()[0]
            first = _colour_mask(frames[int(np.ceil(s["start_s"] * fps))], colour)
            last = _colour_mask(frames[min(int(s["end_s"] * fps), len(frames) - 1)], colour)
            if s["action"] in ("move_left", "move_right"):
                dx = np.nonzero(last)[1].mean() - np.nonzero(first)[1].mean()
                sign = -1 if s["action"] == "move_left" else 1
                assert sign * dx > 0.15 * side["width"], (side["file"], s["sentence"], dx)
            elif s["action"] in ("grow", "shrink", "appear", "disappear"):
                bigger = s["action"] in ("grow", "appear")
                assert (last.sum() > first.sum()) == bigger, (side["file"], s["sentence"])
            else:
                continue
            checked += 1
    assert checked >= 3


def test_downstream_sets_in_official_formats(micro_demo, micro_params):
    sizes = micro_params.corpus.demo.downstream
    ssv2 = micro_demo.downstream_dir / "ssv2"
    labels = json.loads((ssv2 / "labels.json").read_text())
    assert len(labels) == len(SSV2_TEMPLATES)
    assert "Moving something to the left" in labels
    train = json.loads((ssv2 / "train.json").read_text())
    val = json.loads((ssv2 / "validation.json").read_text())
    assert (len(train), len(val)) == (sizes.ssv2_train, sizes.ssv2_val)
    for item in train + val:
        assert set(item) == {"id", "label", "template", "placeholders"}
        assert item["template"].replace("[something]", "something").replace(
            "[Something]", "Something") in labels
        assert probe_video(ssv2 / "videos" / f"{item['id']}.webm").has_audio is False
    # left and right are both present: direction matters
    templates = {i["template"] for i in train}
    assert {"Moving [something] to the left", "Moving [something] to the right"} <= templates

    msr = micro_demo.downstream_dir / "msrvtt"
    ann = json.loads((msr / "MSR_VTT.json").read_text())
    assert len(ann["videos"]) == sizes.msrvtt
    vids = {v["video_id"] for v in ann["videos"]}
    assert {s["video_id"] for s in ann["sentences"]} == vids
    for v in vids:
        assert probe_video(msr / "videos" / "all" / f"{v}.mp4").has_audio
    assert (msr / "test_list.txt").read_text().split() == sorted(vids, key=lambda s: int(s[5:]))

    web = micro_demo.downstream_dir / "webvid"
    with open(web / "results_train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sizes.webvid
    assert set(rows[0]) == {"videoid", "contentUrl", "duration", "page_dir", "name"}
    for r in rows:
        assert (web / "videos" / r["page_dir"] / f"{r['videoid']}.mp4").exists()
        assert r["name"].startswith("the ")

    cc = micro_demo.downstream_dir / "cc3m"
    pairs = [ln.split("\t") for ln in (cc / "Train_GCC-training.tsv").read_text().splitlines()]
    mapping = dict(ln.split("\t") for ln in (cc / "url_map.tsv").read_text().splitlines())
    assert len(pairs) == sizes.cc3m
    for caption, url in pairs:
        assert caption.startswith("a ") and (cc / mapping[url]).exists()


def _histogram(img: np.ndarray) -> np.ndarray:
    q = (img // 64).reshape(-1, 3).astype(np.int64)
    h = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64).astype(np.float64)
    return h / h.sum()


def test_planted_leaks_are_altered_copies_of_eval_clips(micro_demo):
    """The frames in each leak slot match their source clip better than any other clip."""
    assert micro_demo.leaks, "the micro profile plants leaks"
    sources = {("ssv2", p.stem): p
               for p in (micro_demo.downstream_dir / "ssv2" / "videos").glob("2*.webm")}
    sources |= {("msrvtt", p.stem): p
                for p in (micro_demo.downstream_dir / "msrvtt" / "videos" / "all").glob("*.mp4")}
    hists = {k: np.stack([_histogram(f) for f in read_frames(p)]) for k, p in sources.items()}
    for leak in micro_demo.leaks:
        side = json.loads((micro_demo.pretrain_dir / leak["file"]).with_suffix(".json")
                          .read_text())
        assert side["leak"]["downstream_id"] == leak["downstream_id"]
        seg = next(s for s in side["segments"] if s["kind"] == "leak")
        frames = read_frames(micro_demo.pretrain_dir / leak["file"])
        mid = _histogram(frames[int((seg["start_s"] + seg["end_s"]) / 2 * side["fps"])])
        score = {k: float(np.minimum(h, mid[None]).sum(axis=1).max()) for k, h in hists.items()}
        assert max(score, key=score.get) == (leak["downstream_set"], leak["downstream_id"])
        assert leak["alteration"].startswith("shift+")
