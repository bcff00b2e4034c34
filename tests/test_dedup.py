"""Leakage dedup: encoders, FAISS search, pairs, decisions, the stage on the micro demo, the
review page in headless Chromium."""

from __future__ import annotations

import re
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from tvts.config import resolve
from tvts.corpus.demo.media import write_video
from tvts.corpus.demo.scene import background
from tvts.dedup.decisions import TEMPLATE, apply_decisions, decision_line, read_decisions
from tvts.dedup.encoders import ClipEncoder, DCTEncoder, EncoderSpec
from tvts.dedup.extract import FeatureItem, Sampling, extract
from tvts.dedup.search import build_index, measure_recall, search
from tvts.dedup.views import FLIPPED, LUMA
from tvts.errors import UserError
from tvts.stages import dedup as dedup_stage
from tvts.stages import downstream as downstream_stage
from tvts.storage import file_stamp
from tvts.tables import frame, read_table, write_table

from .browser import dump_dom, remote_references, screenshot
from .conftest import micro, stage_record


def _scene(seed: int, n: int = 16, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Frames of a smooth random background with a square moving across it."""
    w, h = size
    bg = background(seed, w, h)
    frames = []
    for i in range(n):
        img = bg.copy()
        x = 10 + 6 * i
        img[40:70, x:x + 30] = [230, 200, 40]
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _altered(frames: np.ndarray, crop: float) -> np.ndarray:
    """A leaked copy: centre crop, downscale, upscale back (as the demo plants them)."""
    h, w = frames.shape[1:3]
    out = []
    for f in frames:
        im = Image.fromarray(f)
        cw, ch = int(w * crop), int(h * crop)
        im = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
        im = im.resize((w // 2, h // 2), Image.BILINEAR).resize((w, h), Image.BILINEAR)
        out.append(np.asarray(im))
    return np.stack(out)


# ---------------------------------------------------------------- encoders
def test_dct_matches_altered_copies_not_other_scenes():
    enc = DCTEncoder()
    a = _scene(1)
    copies = {"same": a, "cropped+rescaled": _altered(a, 0.8)}
    others = [_scene(s) for s in range(2, 12)]
    fa = enc.encode(a)
    assert fa.shape == (16, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(fa, axis=1), 1.0, rtol=1e-5)
    # the copy is compared with the indexed crop of the same scale, as the stage does
    crop = enc.encode(a[:, 12:108, 16:144])  # centre 0.8 crop
    threshold = resolve({}).dedup.threshold
    assert (enc.encode(copies["cropped+rescaled"]) * crop).sum(1).min() > threshold
    assert (enc.encode(copies["same"]) * fa).sum(1).min() > 0.999
    worst = max(float((enc.encode(o) @ fa.T).max()) for o in others)
    assert worst < threshold


def test_blank_frames_match_nothing():
    enc = DCTEncoder()
    blank = np.full((3, 40, 40, 3), 128, np.uint8)
    blank[1] = 0
    blank[2] = [200, 10, 10]  # uniform red: colour but no structure
    assert not enc.encode(blank).any()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP of the real classes, saved the way hub weights are laid out."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    path = tmp_path_factory.mktemp("tiny-clip")
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_clip_encoder_loads_a_saved_model(tiny_clip):
    enc = ClipEncoder(str(tiny_clip), device="cpu", batch_size=5)
    f = enc.encode(_scene(3, n=7))
    assert f.shape == (7, 16)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    assert enc.signature() == ClipEncoder(str(tiny_clip), device="cpu").signature()


def test_clip_encoder_names_the_key_when_weights_are_missing(tmp_path, tiny_clip):
    with pytest.raises(UserError, match=r"dedup\.clip_model.*no such folder.*"
                                        r"dedup\.encoder = dct"):
        ClipEncoder(str(tmp_path / "no-such-model-here"))
    partial = tmp_path / "partial"
    shutil.copytree(tiny_clip, partial)
    (partial / "model.safetensors").unlink()  # a copy cut short
    with pytest.raises(UserError, match=r"dedup\.clip_model = .*incomplete: no "
                                        r"model\.safetensors"):
        ClipEncoder(str(partial))


# ---------------------------------------------------------------- search
def _clustered(n: int, centres: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    x = centres[rng.integers(len(centres), size=n)] + noise * rng.normal(size=(n, centres.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_and_ivf_search_agree_and_recall_is_measured():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    db = _clustered(5000, centres, rng, 0.3)
    queries = np.concatenate([db[:200] + 0.01 * rng.normal(size=(200, 32)).astype(np.float32),
                              _clustered(300, centres, rng, 0.3)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = build_index(db, exact_max=10_000)
    ivf = build_index(db, exact_max=1000, nprobe=8)
    assert exact.exact and ivf.kind.startswith("ivf")
    eq, er, es = search(exact, queries, k=4, threshold=0.95)
    assert set(range(200)) <= set(eq.tolist())  # every near-copy found
    assert (es >= 0.95).all()
    # chunked queries give the same pairs: memory is bounded by the chunk
    cq, cr, _ = search(exact, queries, k=4, threshold=0.95, chunk=37)
    assert sorted(zip(cq, cr, strict=True)) == sorted(zip(eq, er, strict=True))
    rec = measure_recall(ivf, db, queries, k=4, threshold=0.95, sample=500)
    assert rec.queries == 500 and rec.exact_pairs >= 200
    assert rec.pairs is not None and rec.pairs > 0.9


# ---------------------------------------------------------------- decisions
def test_decisions_file_parsing_and_errors(tmp_path):
    path = tmp_path / "d.csv"
    assert read_decisions(path) == {}
    path.write_text(TEMPLATE + "v1,ssv2,10,keep,not a copy\nv2,msrvtt,video3,EXCLUDE,\n")
    assert read_decisions(path) == {("v1", "ssv2", "10"): ("keep", "not a copy"),
                                    ("v2", "msrvtt", "video3"): ("exclude", "")}
    path.write_text(TEMPLATE + "v1,ssv2,10,maybe,\n")
    with pytest.raises(UserError, match=r"d\.csv:5: decision 'maybe'; allowed: keep, exclude"):
        read_decisions(path)
    path.write_text("video,set\nv1,ssv2\n")
    with pytest.raises(UserError, match="header lacks"):
        read_decisions(path)


HOSTILE_IDS = ["cls/a,exclude", 'say "hi"', "a,b,c,d,e", "  padded", "tab\tid", "line\nbreak",
               "# not a comment", "ünïcode"]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_ready_to_paste_lines_read_back_as_the_same_pair(tmp_path, hostile):
    path = tmp_path / "d.csv"
    lines = [decision_line("v1", "ssv2", hostile, "keep"),
             decision_line(hostile, "msrvtt", "video3", "keep", note="a, b")]
    path.write_text(TEMPLATE + "".join(line + "\n" for line in lines))
    got = read_decisions(path)
    assert got == {("v1", "ssv2", hostile.strip()): ("keep", ""),
                   (hostile.strip(), "msrvtt", "video3"): ("keep", "a, b")}


def test_an_unquoted_comma_is_refused_not_read_as_another_pair(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(TEMPLATE + "v1,ssv2,cls/a,exclude,keep,\n")
    with pytest.raises(UserError, match=r"d\.csv:5: 6 fields where the header has 5"):
        read_decisions(path)


def test_decisions_override_automatic_ones():
    pairs = pl.DataFrame({"video_id": ["v1", "v2"], "downstream_set": ["s", "s"],
                          "downstream_id": ["a", "b"], "similarity": [0.99, 0.985]})
    out = apply_decisions(pairs, {("v1", "s", "a"): ("keep", ""),
                                  ("v3", "s", "c"): ("exclude", "seen by eye")}, "d.csv")
    got = {r["video_id"]: (r["decision"], r["decided_by"]) for r in out.iter_rows(named=True)}
    assert got == {"v1": ("keep", "d.csv"), "v2": ("exclude", "auto"),
                   "v3": ("exclude", "d.csv")}
    assert out.filter(pl.col("video_id") == "v3")["similarity"].item() is None


# ---------------------------------------------------------------- extraction
def test_extraction_is_sharded_and_resumes(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"c{i}.mp4"
        write_video(p, _scene(i, n=10), 5)
        paths.append(p)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    def item(key: str, path: Path) -> FeatureItem:
        return FeatureItem(key, str(path), 2.0, file_stamp(str(path)))

    items = [item(f"c{i}", p) for i, p in enumerate(paths)]
    items.append(item("broken", tmp_path / "broken.mp4"))
    kw = dict(sampling=Sampling(frames=3, crop_scales=(1.0, 0.8)),
              encoder=EncoderSpec("dct"), num_shards=3, workers=1, decode_size=64)
    first = extract(items, tmp_path / "feats", **kw)
    f = first.features
    assert sorted(f.keys) == ["c0", "c1", "c2", "c3"]
    # 4 clips x 3 frames x 2 crops x 4 views (as is, flipped, luma, flipped luma)
    assert len(f.vectors) == 4 * 3 * 2 * 4
    assert sorted(np.unique(f.view).tolist()) == [0, FLIPPED, LUMA, FLIPPED | LUMA]
    assert [k for k, _ in f.failed] == ["broken"]
    # pretraining frames are searched as they are: one vector per frame and crop
    queried = extract(items[:1], tmp_path / "queries", indexed=False,
                      **{**kw, "sampling": Sampling(frames=3)})
    assert len(queried.features.vectors) == 3 and not queried.features.view.any()
    again = extract(items, tmp_path / "feats", **kw)
    assert again.shards_reused == again.shards_total == first.shards_total
    # one more item changes only its own shard
    write_video(tmp_path / "c4.mp4", _scene(4, n=10), 5)
    more = extract([*items, item("c4", tmp_path / "c4.mp4")], tmp_path / "feats", **kw)
    assert more.shards_reused == more.shards_total - 1
    assert "c4" in more.features.keys
    # a clip rewritten under the same name is encoded again, not served from its old shard
    old = more.features.vectors[np.asarray(more.features.item) == more.features.keys.index("c0")]
    write_video(paths[0], _scene(9, n=12), 5)
    items[0] = item("c0", paths[0])
    redo = extract([*items, item("c4", tmp_path / "c4.mp4")], tmp_path / "feats", **kw)
    assert redo.shards_reused == redo.shards_total - 1
    new = redo.features.vectors[np.asarray(redo.features.item) == redo.features.keys.index("c0")]
    assert not np.allclose(old, new)


# ---------------------------------------------------------------- the stage on the demo
@pytest.fixture(scope="module")
def micro_run(tmp_path_factory, micro_corpus_stage):
    """corpus -> downstream -> dedup on the micro profile (no ASR: all videos are queried)."""
    root = tmp_path_factory.mktemp("dedup-demo")
    corpus = root / "corpus"
    corpus.symlink_to(micro_corpus_stage / "corpus")  # shared by the session: read only
    decisions = root / "decisions.csv"
    params = micro({"dedup": {"decisions": str(decisions)}})
    downstream_stage.run(params, root / "downstream", root / "downstream.json",
                         demo_root=corpus / "demo" / "downstream")

    def run_dedup() -> dict:
        dedup_stage.run(params, corpus / "videos.parquet", root / "downstream",
                        corpus / "leak_truth.parquet", root / "dedup",
                        root / "report", root / "dedup.json")
        return stage_record(root / "dedup.json")

    return root, decisions, run_dedup


@pytest.mark.slow
def test_planted_leaks_found_and_nothing_else(micro_run):
    root, _decisions, run_dedup = micro_run
    m = run_dedup()
    truth = read_table(root / "corpus" / "leak_truth.parquet", "leak_truth")
    assert truth.height >= 2
    planted = m["planted"]
    assert planted["pair_recall"] == 1.0 and planted["pair_precision"] == 1.0, planted
    leaks = read_table(root / "dedup" / "leaks.parquet", "leaks")
    assert (leaks["decided_by"] == "auto").all() and (leaks["similarity"] >= m["threshold"]).all()
    kept = read_table(root / "dedup" / "videos.parquet", "videos")
    videos = read_table(root / "corpus" / "videos.parquet", "videos")
    assert set(kept["video_id"]) == set(videos["video_id"]) - set(truth["video_id"])
    assert m["index"] == "flat" and m["encoder"] == "dct"
    manifest = read_table(root / "downstream" / "ssv2.parquet", "downstream")
    assert set(manifest["split"]) == {"train", "val"}


@pytest.mark.slow
def test_decisions_file_is_honoured_on_the_next_run(micro_run):
    root, decisions, run_dedup = micro_run
    leaks = read_table(root / "dedup" / "leaks.parquet", "leaks")
    first = leaks.row(0, named=True)
    assert first["video_id"] not in set(
        read_table(root / "dedup" / "videos.parquet", "videos")["video_id"])
    decisions.write_text(TEMPLATE + f"{first['video_id']},{first['downstream_set']},"
                         f"{first['downstream_id']},keep,checked\n")
    m = run_dedup()
    after = read_table(root / "dedup" / "leaks.parquet", "leaks")
    kept = set(read_table(root / "dedup" / "videos.parquet", "videos")["video_id"])
    assert first["video_id"] in kept
    assert m["excluded_videos"] == after.filter(pl.col("decision") == "exclude")[
        "video_id"].n_unique()
    assert m["shards_reused"] > 0  # features came from the first run
    row = after.filter(pl.col("video_id") == first["video_id"]).row(0, named=True)
    assert (row["decision"], row["decided_by"]) == ("keep", str(decisions))
    decisions.write_text(TEMPLATE)


def test_downstream_directory_set_and_errors(tmp_path):
    root = tmp_path / "clips"
    (root / "jumping").mkdir(parents=True)
    write_video(root / "jumping" / "a.mp4", _scene(1, n=8), 4)
    (root / "sitting.webm").write_bytes(b"broken")
    params = resolve({"downstream": {"sets": {"mine": str(root)}, "workers": 1, "svo": None}})
    downstream_stage.run(params, tmp_path / "out", tmp_path / "m.json")
    man = read_table(tmp_path / "out" / "mine.parquet", "downstream")
    assert man.rows(named=True)[0]["label"] == "jumping"
    assert man["downstream_id"].to_list() == ["jumping/a"]
    bad = read_table(tmp_path / "out" / "quarantine.parquet", "quarantine")
    assert bad["video_id"].to_list() == ["mine/sitting"]
    with pytest.raises(UserError, match="demo generator has no set 'kinetics'"):
        downstream_stage.run(resolve({"downstream": {"sets": {"kinetics": "demo"}}}),
                             tmp_path / "o2", tmp_path / "m2.json")
    with pytest.raises(UserError, match="not a directory"):
        downstream_stage.run(resolve({"downstream": {"sets": {"x": str(tmp_path / "nope")}}}),
                             tmp_path / "o3", tmp_path / "m3.json")


# ---------------------------------------------------------------- the review page
EVIL = '<marquee>x,"exclude'  # HTML, and a comma and a quote for the CSV line


def _magenta(n: int) -> np.ndarray:
    """Magenta frames with luma structure (a gradient and a moving bar)."""
    h, w = 120, 160
    u = np.linspace(0.0, 1.0, w)[None, :, None]
    v = np.linspace(0.0, 1.0, h)[:, None, None]
    out = []
    for i in range(n):
        img = np.concatenate([200 + 55 * u + 0 * v, 40 * v + 0 * u, 200 + 55 * (1 - u) + 0 * v],
                             axis=2)
        img[:, 8 * i:8 * i + 10] *= 0.8
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def evil_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evil")
    clips = root / "clips" / "<b>label</b>".replace("/", "")
    clips.mkdir(parents=True)
    write_video(clips / f"{EVIL}.mp4", _magenta(10), 5)
    write_video(clips / "other.mp4", _scene(7, n=10), 5)
    host = np.concatenate([_scene(8, n=15), _magenta(10), _scene(9, n=15)])
    write_video(root / f"host{EVIL}.mp4", host, 5)
    write_video(root / "clean.mp4", _scene(10, n=20), 5)
    videos = frame([{"video_id": vid, "uri": str(path), "duration_s": dur, "fps": 5.0,
                     "width": 160, "height": 120, "has_audio": False, "source": "test",
                     "split": "train"}
                    for vid, path, dur in (("host", root / f"host{EVIL}.mp4", 8.0),
                                           ("clean", root / "clean.mp4", 4.0))], "videos")
    write_table(videos, root / "videos.parquet", "videos")
    params = resolve({"downstream": {"sets": {"mine": str(root / "clips")}, "workers": 1,
                                     "svo": None},
                      "dedup": {"decisions": str(root / "none.csv"), "workers": 1,
                                "num_shards": 2}})
    downstream_stage.run(params, root / "downstream", root / "d.json")
    dedup_stage.run(params, root / "videos.parquet", root / "downstream",
                    root / "no-truth.parquet", root / "dedup", root / "report",
                    root / "m.json")
    leaks = read_table(root / "dedup" / "leaks.parquet", "leaks")
    assert leaks["video_id"].to_list() == ["host"]  # the copy, and only it
    assert leaks["downstream_id"].to_list() == [f"<b>label<b>/{EVIL}"]
    return root / "report" / "index.html"


def test_report_renders_in_chromium_with_thumbnails(evil_report, tmp_path):
    img = screenshot(evil_report, tmp_path / "shot.png")
    magenta = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] > 180)
    # both thumbnails (120 px high) are magenta: thousands of pixels, not a stray few
    assert magenta.sum() > 5000


def test_report_shows_html_in_names_as_text(evil_report, tmp_path):
    dom = dump_dom(evil_report)
    assert "<marquee" not in dom.lower()  # no element was injected
    assert "&lt;marquee&gt;x" in dom and "&lt;b&gt;label&lt;b&gt;" in dom
    html = evil_report.read_text()
    assert "<marquee" not in html and remote_references(html) == []
    thumbs = list((evil_report.parent / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 2 and all("<" not in t.name for t in thumbs)
    # the ready-to-paste line, as a reviewer copies it from the page, is the same pair
    pasted = re.search(r"<code>(host[^<]*?keep,)</code>", dom)
    assert pasted is not None
    decisions = tmp_path / "d.csv"
    decisions.write_text(TEMPLATE + unescape(pasted.group(1)) + "\n")
    assert list(read_decisions(decisions)) == [("host", "mine", f"<b>label<b>/{EVIL}")]


@pytest.mark.slow
def test_stage_runs_with_a_clip_encoder_loaded_by_path(micro_run, tiny_clip):
    root, decisions, _ = micro_run
    params = micro({"dedup": {
        "encoder": "clip", "clip_model": str(tiny_clip), "device": "cpu",
        "decisions": str(decisions)}})
    summary = dedup_stage.run(params, root / "corpus" / "videos.parquet", root / "downstream",
                              root / "corpus" / "leak_truth.parquet", root / "dedup-clip",
                              root / "report-clip", root / "clip.json")
    m = stage_record(root / "clip.json")
    assert summary.startswith("dedup (clip)") and m["encoder"] == "clip"
    assert m["indexed_vectors"] > 0 and m["quarantined"] == 0
    # a random tiny CLIP is no judge of copies; what matters is that it ran, and said so
    assert "clip (" in (root / "report-clip" / "index.html").read_text()
    shards = list((root / "dedup-clip" / "features" / "downstream").glob("*.npz"))
    assert shards and all(np.load(s)["vectors"].shape[1] == 16 for s in shards)
