"""Evaluation: retrieval metrics against the reference definitions, probes, multi-view feature
extraction and its cache, transcript-sort conditions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from tvts.errors import UserError
from tvts.eval.features import ClipFeatures
from tvts.eval.probes import ProbeSettings, attentive_probe, linear_probe
from tvts.eval.protocols import video_to_video
from tvts.metrics import (
    degeneracy,
    hit_rates,
    label_retrieval,
    ranks,
    retrieval_metrics,
    topk_accuracy,
)

from .conftest import make_video, micro


# ---------------------------------------------------------------- retrieval metrics
def reference_metrics(sim: np.ndarray, targets: np.ndarray, ks=(1, 5, 10, 50)) -> dict:
    """The averaging rule written out plainly: every order of the items tied with the ground
    truth is equally likely; R@k is the share of (query, order) pairs with the ground truth in
    the first k, a query's rank the mean of its positions over the orders."""
    rank, hits = [], {k: [] for k in ks}
    for q in range(sim.shape[0]):
        truth = sim[q, targets[q]]
        ahead = sum(1 for j in range(sim.shape[1]) if sim[q, j] > truth)
        tied = sum(1 for j in range(sim.shape[1]) if sim[q, j] == truth)
        positions = [ahead + p for p in range(1, tied + 1)]  # each equally likely
        rank.append(np.mean(positions))
        for k in ks:
            hits[k].append(np.mean([p <= k for p in positions]))
    out = {f"R@{k}": 100.0 * np.mean(hits[k]) for k in ks}
    out["MedR"] = float(np.median(rank))
    out["MeanR"] = float(np.mean(rank))
    return out


def test_medr_is_the_mean_of_the_two_middle_ranks():
    # ranks 1, 2, 3, 4 on the diagonal: torch.median would say 2.0
    sim = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                        [0.9, 0.5, 0.0, 0.0],
                        [0.9, 0.8, 0.5, 0.0],
                        [0.9, 0.8, 0.7, 0.5]])
    assert ranks(sim).tolist() == [1, 2, 3, 4]
    m = retrieval_metrics(sim)
    assert m["MedR"] == 2.5 and m["MeanR"] == 2.5
    assert m["R@1"] == 25.0 and m["R@5"] == 100.0 and m["R@50"] == 100.0


def test_ties_take_the_mean_over_the_tied_block():
    sim = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.2, 0.9], [0.1, 0.1, 0.1]])
    # query 0: three tied -> rank 2; query 1: one ahead, two tied -> 2.5; query 2: 2
    assert ranks(sim).tolist() == [2.0, 2.5, 2.0]
    assert retrieval_metrics(sim, (1, 2))["R@1"] == pytest.approx(100 * (1 / 3 + 0 + 1 / 3) / 3)


@pytest.mark.parametrize("n", [2, 7, 50, 101])
def test_a_collapsed_encoder_scores_chance_not_a_perfect_recall(n):
    # every clip mapped to one vector: every item ties with the ground truth
    m = retrieval_metrics(torch.ones(n, n), (1, 5, 10))
    assert m["R@1"] == pytest.approx(100 / n)
    assert m["R@5"] == pytest.approx(100 * min(5, n) / n)
    assert m["MedR"] == pytest.approx((n + 1) / 2) and m["MeanR"] == pytest.approx((n + 1) / 2)
    labels = torch.arange(n) % 2
    v2v = label_retrieval(torch.ones(n, n), labels, labels, (1,), torch.arange(n))
    same = [(labels == labels[q]).sum().item() - 1 for q in range(n)]
    assert v2v["R@1"] == pytest.approx(100 * np.mean([s / (n - 1) for s in same]))


@pytest.mark.parametrize("queries", [7, 8, 33, 64])
def test_against_the_reference_definitions_with_ties(queries):
    rng = np.random.default_rng(queries)
    sim = rng.integers(0, 6, size=(queries, 40)).astype(np.float32)  # many ties
    targets = rng.integers(0, 40, size=queries)
    ours = retrieval_metrics(torch.from_numpy(sim), targets=torch.from_numpy(targets))
    ref = reference_metrics(sim, targets)
    assert ours == pytest.approx(ref)


def test_several_ground_truths_count_the_first_one_found():
    from itertools import permutations

    # one query, items 0..4: items 1 and 3 are ground truths; 0 scores above, 1-4 tie
    sim = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.5]])
    positive = torch.tensor([[False, True, False, True, False]])
    block = [1, 2, 3, 4]
    firsts, hits = [], {1: [], 2: [], 3: []}
    for order in permutations(block):  # every order of the tied block, equally likely
        pos = 1 + next(i for i, item in enumerate(order, 1) if positive[0, item])
        firsts.append(pos)
        for k in hits:
            hits[k].append(pos <= k)
    got = hit_rates(sim, positive, (1, 2, 3))
    assert got["MeanR"] == pytest.approx(np.mean(firsts))
    for k in hits:
        assert got[f"R@{k}"] == pytest.approx(100 * np.mean(hits[k]))


def test_degenerate_features_are_named():
    rng = np.random.default_rng(0)
    assert degeneracy(rng.normal(size=(40, 16)), "ok") is None
    assert "near-constant" in degeneracy(np.ones((40, 16)) + 1e-9 * rng.normal(size=(40, 16)),
                                         "flat")
    low = rng.normal(size=(40, 1)) @ rng.normal(size=(1, 64))  # rank 1
    assert "rank-deficient" in degeneracy(low + 5, "low")


def test_multi_caption_queries_map_to_their_video():
    # 3 captions for 2 videos: captions 0 and 1 describe video 0, caption 2 video 1
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.3], [0.1, 0.8]])
    m = retrieval_metrics(sim, (1,), targets=torch.tensor([0, 0, 1]))
    assert m["R@1"] == pytest.approx(200 / 3) and m["MedR"] == 1.0
    with pytest.raises(ValueError, match="targets"):
        ranks(sim)


def test_video_to_video_excludes_the_query_itself():
    gallery = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 1])
    sim = gallery[:2] @ gallery.T  # queries are items 0 and 1: each is most similar to itself
    sim[0, 1] = 0.5  # item 1 shares query 0's label
    out = label_retrieval(sim, labels[:2], labels, (1,), exclude=torch.tensor([0, 1]))
    # query 0 finds item 1; query 1's next best is a three-way tie at 0, one of its label
    assert out["R@1"] == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert label_retrieval(sim, labels[:2], labels, (1,))["R@1"] == 100.0  # itself, if allowed


def test_topk_accuracy():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    acc = topk_accuracy(scores, torch.tensor([2, 0]), (1, 2, 5))
    assert acc == {"top1": 50.0, "top2": 100.0, "top5": 100.0}


# ---------------------------------------------------------------- probes
def _separable(n: int, classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 4
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


SETTINGS = ProbeSettings(epochs=30, batch_size=64, lr=0.1, seed=0)


def test_linear_probe_separates_separable_features():
    x, y = _separable(400, 5, 32, 0)
    xt, yt = _separable(100, 5, 32, 0)  # same centres (same seed), new points
    views = np.stack([xt, xt + 0.01], axis=1)  # (M, V=2, D)
    res = linear_probe(x, y, views, yt, 5, SETTINGS)
    assert res.metrics["top1"] >= 98.0
    assert res.probabilities.shape == (100, 5)


def test_linear_probe_stays_near_chance_on_shuffled_labels():
    x, y = _separable(400, 5, 32, 0)
    xt, yt = _separable(400, 5, 32, 0)
    rng = np.random.default_rng(1)
    res = linear_probe(x, rng.permutation(y), xt[:, None], rng.permutation(yt), 5, SETTINGS)
    assert abs(res.metrics["top1"] - 20.0) < 10.0


def test_attentive_probe_learns_a_token_that_carries_the_class():
    rng = np.random.default_rng(0)
    n, t, w = 300, 6, 16
    tokens = rng.normal(size=(n, t, w)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    tokens[np.arange(n), 2, y] += 5.0  # token 2 says the class
    s = ProbeSettings(epochs=30, batch_size=32, lr=3e-3, weight_decay=0.0, heads=2)
    res = attentive_probe(tokens[:200], y[:200], tokens[200:, None], y[200:], 3, s)
    assert res.metrics["top1"] >= 90.0


def test_attentive_probe_is_v_jepas_block_with_residuals():
    from tvts.eval.probes import AttentiveProbe

    probe = AttentiveProbe(16, 3, 2).eval()
    assert {"norm1", "attn", "norm2", "mlp", "fc"} <= {n for n, _ in probe.named_children()}
    assert probe.mlp[0].out_features == 64  # MLP x4
    tokens = torch.randn(5, 6, 16)
    with torch.no_grad():
        x = probe.norm1(tokens)
        q = probe.query.expand(5, -1, -1)
        q = q + probe.attn(q, x, x, need_weights=False)[0]
        q = q + probe.mlp(probe.norm2(q))
        torch.testing.assert_close(probe(tokens), probe.fc(q[:, 0]))


# ---------------------------------------------------------------- features
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [make_video(root / f"c{i}.mp4", seconds=2.0, fps=8, size=(48, 40), audio=False,
                       seed=i) for i in range(5)]


def _encoder(name: str, seed: int):
    from tvts.eval.features import FrozenEncoder, weights_fingerprint
    from tvts.models.video_vit import VideoViT, VideoViTConfig

    torch.manual_seed(seed)
    vit = VideoViT(VideoViTConfig(img_size=32, num_frames=4, patch_size=8, width=32, depth=1,
                                  heads=2))
    proj = torch.nn.Linear(32, 16)
    return FrozenEncoder(name, vit, proj, weights_fingerprint(vit, proj))


def test_extraction_shapes_cache_and_one_decode_for_all_encoders(clips, tmp_path, monkeypatch):
    from tvts.eval import features as F
    from tvts.storage import file_stamp

    items = [F.ClipItem(f"c{i}", str(p), file_stamp(str(p))) for i, p in enumerate(clips)]
    items.append(F.ClipItem("broken", str(tmp_path / "nope.mp4"), "missing"))
    spec = F.ViewSpec(4, 32, 36, "pyav", temporal=2, spatial=3, token_grid=2)
    encs = [_encoder("a", 0), _encoder("b", 1)]
    res = F.extract(items, encs, spec, tmp_path / "f", num_shards=3, batch_size=2, workers=0)
    a = res.features["a"]
    assert sorted(a.ids) == [f"c{i}" for i in range(5)]
    assert a.cls.shape == (5, 6, 32) and a.vec.shape == (5, 6, 16)
    # 4 frames / tubelet 2 = 2 slices, a 4x4 grid pooled to 2x2 -> 8 tokens
    assert a.tokens.shape == (5, 6, 8, 32) and a.tokens.dtype == np.float16
    assert [k for k, _ in a.failed] == ["broken"]
    assert res.clips_decoded == 6 and res.shards_reused == 0
    assert not np.allclose(a.cls, res.features["b"].cls)
    # views differ (temporal and spatial), and the features are the encoder's own output
    assert not np.allclose(a.cls[:, 0], a.cls[:, 5])
    # a rerun reuses every shard, decoding nothing
    calls = []
    monkeypatch.setattr(F.FrozenEncoder, "encode",
                        lambda self, *a_: calls.append(1) or pytest.fail("re-encoded"))
    again = F.extract(items, encs, spec, tmp_path / "f", num_shards=3, batch_size=2, workers=0)
    assert again.clips_decoded == 0 and again.shards_reused == again.shards_total
    np.testing.assert_array_equal(again.features["a"].select(a.ids).cls, a.cls)


def test_changed_weights_redo_only_that_encoders_shards(clips, tmp_path):
    from tvts.eval import features as F

    items = [F.ClipItem(f"c{i}", str(p)) for i, p in enumerate(clips)]
    spec = F.ViewSpec(4, 32, 36, "pyav")
    a, b = _encoder("a", 0), _encoder("b", 1)
    F.extract(items, [a, b], spec, tmp_path, num_shards=2, workers=0)
    b2 = _encoder("b", 2)  # retrained: new weights, same name
    res = F.extract(items, [a, b2], spec, tmp_path, num_shards=2, workers=0)
    assert res.shards_reused == 2 and res.clips_decoded == 5


def test_set_splits_fall_back_to_val_and_hash_unsplit_rows():
    from tvts.eval.protocols import set_splits

    def manifest(splits, labels):
        n = len(splits)
        return pl.DataFrame({"downstream_set": ["s"] * n,
                             "downstream_id": [f"i{i}" for i in range(n)], "uri": ["u"] * n,
                             "split": splits, "label": labels, "captions": [[]] * n,
                             "duration_s": [1.0] * n},
                            schema_overrides={"captions": pl.List(pl.Utf8)})

    s = set_splits(manifest(["train", "val", "test"], ["a", "b", None]))
    assert s.test_split == "val" and s.test["downstream_id"].to_list() == ["i1"]
    unsplit = set_splits(manifest([None] * 200, ["a"] * 200))
    assert 20 < unsplit.test.height < 60 and unsplit.train.height + unsplit.test.height == 200


# ---------------------------------------------------------------- transcript sorting
def test_sort_conditions_on_the_real_model():
    from tvts.eval.sorting import sort_accuracies, text_only_hits
    from tvts.models.factory import build_tvts

    params = micro({"sort": {"time_embedding": "sincos"}})
    torch.manual_seed(0)
    model = build_tvts(params).eval()
    d, k = params.data, params.data.num_transcripts
    b = 4
    batch = {"video": torch.randint(0, 255, (b, 3, d.num_frames, d.frame_size, d.frame_size),
                                    dtype=torch.uint8),
             "input_ids": torch.randint(1000, 2000, (b, k, 5)),
             "attention_mask": torch.ones(b, k, 5, dtype=torch.long),
             "order": torch.stack([torch.randperm(k) for _ in range(b)]),
             "video_ids": ["a", "a", "b", "c"]}
    with torch.no_grad():
        out = model(batch["video"].float(), batch["input_ids"], batch["attention_mask"],
                    batch["order"])
        hits = text_only_hits(model.sorter, out, batch)
        alone = model.sorter(out["video_tokens"][:, :0], out["transcripts"])
        with_video = model.sorter(out["video_tokens"], out["transcripts"])
    assert torch.equal(hits, alone.argmax(-1) == batch["order"])
    assert not torch.allclose(alone, with_video)  # the video tokens are really left out
    res = sort_accuracies({"m": model, "twin": model}, [batch, batch], torch.device("cpu"))
    m = res["m"]
    assert res["twin"] == m
    assert m["transcripts_video"] == m["transcripts_text_only"] == 2 * b * k
    assert m["transcripts_other_video"] == 2 * 3 * k  # one row rolls onto its own video
    assert m["chance_acc"] == 1 / k and m["chance_seq_acc_independent"] == 1 / k**k
    assert m["acc_text_only"] == pytest.approx(float(hits.float().mean()))


def test_exported_model_loads_back_and_a_foreign_one_is_refused(tmp_path):
    from tvts.errors import UserError
    from tvts.eval.encoders import load_exported, random_model
    from tvts.models.factory import model_signature
    from tvts.train.export import export_model

    params = micro()
    model = random_model(params)
    torch.nn.init.normal_(model.proj.video.weight)  # differs from a fresh build
    export_model(model, tmp_path / "m", {"signature": model_signature(params)})
    loaded = load_exported(params, tmp_path / "m")
    assert torch.equal(loaded.proj.video.weight, model.proj.video.weight)
    assert not torch.equal(random_model(params).proj.video.weight, model.proj.video.weight)
    assert torch.equal(random_model(params).proj.video.weight,
                       random_model(params).proj.video.weight)  # the floor is seeded
    wider = micro({"model": {"video": {"width": 96}}})
    with pytest.raises(UserError, match="another architecture"):
        load_exported(wider, tmp_path / "m")
    # the CLI adds which stage makes it (tested in test_config)
    with pytest.raises(UserError, match=r"tvts\.safetensors \(an exported model\) does not exist"):
        load_exported(params, tmp_path / "nothing")


# ---------------------------------------------------------------- text-only control
def _transcript_entries(n: int, cue: bool, seed: int = 0) -> list:
    """Videos of four 4 s slots, one spoken event per slot (the demo's layout). With `cue`
    each slot's words say where it comes ("first" ... "fourth"); without, the events are a
    shared vocabulary in a random order."""
    from tvts.data.tvts_dataset import VideoEntry

    rng = np.random.default_rng(seed)
    names = ["first", "second", "third", "fourth"]
    vocab = [f"the {c} {s} moves" for c in ("red", "green", "blue") for s in ("circle", "square")]
    entries = []
    for v in range(n):
        chosen = rng.choice(len(vocab), size=4, replace=False)
        times, words = [], []
        for slot, e in enumerate(chosen):
            said = vocab[e].split() + ([names[slot]] if cue else [])
            times += [4.0 * slot + 1.0 + 0.3 * i for i in range(len(said))]
            words += said
        entries.append(VideoEntry(f"v{v}", f"v{v}.mp4", 16.0, np.array(times), words))
    return entries


def _toy_encoder(texts: list[str]) -> torch.Tensor:
    """A fixed bag-of-words feature: what a frozen text encoder gives, cheaply."""
    vocab = ["red", "green", "blue", "circle", "square", "moves", "first", "second", "third",
             "fourth"]
    return torch.tensor([[float(w in t.split()) for w in vocab] for t in texts])


@pytest.mark.parametrize("cue", [True, False])
def test_text_only_sorter_finds_a_text_shortcut_and_only_then(cue):
    from tvts.data.tvts_dataset import SampleSpec
    from tvts.eval.text_sorter import TextSortSettings, train_text_only_sorter
    from tvts.models.sorter import SortTransformer

    spec = SampleSpec(num_frames=4, frame_size=32, resize_short=32, decoder="pyav",
                      num_transcripts=4, window_s=(3.0, 3.0), gap_s=1.0, mask_ratio=0.0,
                      tubelet=2, patch_size=8)
    settings = TextSortSettings(epochs=8, clips_per_video=4, batch_size=16, lr=2e-3,
                                weight_decay=0.0, schedule="cosine", milestones=[],
                                warmup_epochs=0.0, val_clips_per_video=4, seed=0)
    torch.manual_seed(0)
    sorter = SortTransformer(32, 2, 1, 4, "kway", text_dim=10, time_embedding="sincos",
                             slices=2)
    r = train_text_only_sorter(sorter, _toy_encoder, _transcript_entries(48, cue),
                               _transcript_entries(16, cue, seed=1), spec, settings)
    assert r["held_out_samples"] == 64 and r["chance_acc"] == 0.25
    if cue:  # the words give the order away: the control must say so
        assert r["acc"] > 0.9
    else:  # order-free scripts: nothing to learn from the text
        assert abs(r["acc"] - 0.25) < 0.1


# ---------------------------------------------------------------- floors
def test_random_floor_is_untrained_and_init_is_the_start_point(monkeypatch):
    from tvts.eval import encoders
    from tvts.models import factory

    loaded = []

    def fake_load(model, path):  # stands for ImageMAE weights: a recognisable constant
        loaded.append(path)
        with torch.no_grad():
            model.cls_token.fill_(0.5)
        return type("Report", (), {"summary": lambda self: "fake"})()

    monkeypatch.setattr(factory, "load_image_vit", fake_load)
    demo = micro()
    assert not encoders.init_differs(demo)
    assert torch.equal(encoders.random_model(demo).video.cls_token,
                       encoders.init_model(demo).video.cls_token)
    paper_like = micro({"model": {"video": {"init": "/w/mae.pth"}}})
    assert encoders.init_differs(paper_like)
    rand, init = encoders.random_model(paper_like), encoders.init_model(paper_like)
    assert loaded == ["/w/mae.pth"]  # only the init floor loads the start weights
    assert torch.all(init.video.cls_token == 0.5)
    assert not torch.all(rand.video.cls_token == 0.5)
    # seeded: the random floor is the same model in every run
    torch.testing.assert_close(rand.state_dict(), encoders.random_model(paper_like).state_dict())


def test_retrieval_sets_read_the_papers_4_frames_and_classification_sets_16():
    from tvts.config import resolve
    from tvts.stages.evaluate import _frames

    paper = resolve({"profile": "paper", "model": {"video": {"init": "scratch"}}})
    assert _frames(paper, ["t2v", "t2v_finetune"]) == 4
    assert _frames(paper, ["linear", "attentive", "v2v", "finetune"]) == 16
    demo = resolve({})  # unset: data.num_frames for every set
    assert _frames(demo, ["t2v"]) == demo.data.num_frames


def _v2v_feats(labels: list[str], seed: int) -> tuple[ClipFeatures, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n = len(labels)
    ids = [f"c{seed}-{i}" for i in range(n)]
    x = rng.normal(size=(n, 1, 8)).astype(np.float32)
    feats = ClipFeatures(ids, x, x, x, np.zeros((n, 1, 1, 8), np.float16))
    return feats, pl.DataFrame({"downstream_id": ids, "label": labels})


def test_video_to_video_refuses_a_one_class_set_and_reports_chance():
    """Before: R@1 = 100 for every encoder, random weights included, on a one-class set."""
    train, train_rows = _v2v_feats(["a"] * 6, 0)
    test, test_rows = _v2v_feats(["a"] * 3, 1)
    with pytest.raises(UserError, match="at least two classes; this set has 1 \\('a'\\)"):
        video_to_video(train, train_rows, test, test_rows, (1,))
    train, train_rows = _v2v_feats(["a", "b"] * 3, 0)
    test, test_rows = _v2v_feats(["a", "b", "b"], 1)
    out = video_to_video(train, train_rows, test, test_rows, (1,))
    # 9 clips, 8 neighbours each: query "a" has 3 of its label among them, "b" 4
    assert out["chance_r1"] == pytest.approx(100 * (3 / 8 + 4 / 8 + 4 / 8) / 3, abs=0.01)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_exported_files_follow_the_umask(tmp_path, umask):
    """Before: text_encoder/model.safetensors was 0600 whatever the umask (the HF save)."""
    import os

    from tvts.eval.encoders import random_model
    from tvts.models.factory import model_signature
    from tvts.train.export import export_model

    params = micro()
    old = os.umask(umask)
    try:
        export_model(random_model(params), tmp_path / "m",
                     {"signature": model_signature(params)})
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "m").rglob("*") if p.is_file()]
    assert tmp_path / "m" / "text_encoder" / "model.safetensors" in files
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")]
