"""The fine-tuning protocols' parts: drop path, layer-wise lr decay through the trainer, timm's
mixup / cutmix and RandAugment on clips, multi-view averaging, the classification run and its
reuse, and the SVO-Probes test (metrics and the release's file format)."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tvts.config import FinetuneConfig
from tvts.data.augment import ClipMixup, ClipRandAugment
from tvts.eval.features import ViewSpec
from tvts.eval.finetune import (
    ClassifyData,
    ClassifyTask,
    FinetuneResult,
    average_views,
    finetune_classification,
    labelled_collate,
    predict_views,
)
from tvts.models.classifier import VideoClassifier, with_drop_path
from tvts.models.video_vit import VideoViT, VideoViTConfig
from tvts.train.distributed import Dist
from tvts.train.loop import Trainer
from tvts.train.param_groups import layer_decay_groups
from tvts.train.schedule import lr_at

from .conftest import make_video

CPU = Dist(0, 1, 0, torch.device("cpu"))


def _vit(depth: int = 3, drop: float = 0.0) -> VideoViT:
    torch.manual_seed(0)
    return VideoViT(VideoViTConfig(img_size=16, num_frames=4, patch_size=8, width=32,
                                   depth=depth, heads=2, drop_path=drop))


# ---------------------------------------------------------------- drop path
def test_drop_path_really_drops_residual_branches_in_training_only():
    base = _vit()
    vit = with_drop_path(base, 0.5)  # rising over the blocks to 0.5 in the last one
    torch.testing.assert_close(vit.state_dict(), base.state_dict())
    block = vit.blocks[-1]
    x = torch.randn(1, 9, 32).expand(400, -1, -1).contiguous()  # one token row, 400 times
    block.train()
    torch.manual_seed(1)
    out = block(x)
    torch.manual_seed(1)
    torch.testing.assert_close(block(x), out)  # deterministic under a seed
    # a sample whose attention and MLP branches were both dropped leaves the block as it came:
    # each branch is dropped with p = 0.5 per sample, independently, so a quarter of the rows
    untouched = (out == x).all(dim=(1, 2)).float().mean()
    assert 0.17 < untouched < 0.33, untouched
    block.eval()
    ev = block(x)
    torch.testing.assert_close(ev, ev[:1].expand_as(ev))
    assert not (ev == x).all(dim=(1, 2)).any()
    # the encoder as built (rate 0, the release's setting whatever its config said) drops
    # nothing in training
    plain = base.blocks[-1].train()(x)
    assert not (plain == x).all(dim=(1, 2)).any()


# ---------------------------------------------------------------- layer-wise lr decay
def test_layer_decay_groups_give_each_block_its_rate():
    model = VideoClassifier(_vit(depth=3), classes=5)
    groups = layer_decay_groups(model, 0.05, 0.5, depth=3)
    of = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(of) == len(named)
    assert of[id(named["video.patch_embed.proj.weight"])] == (0.5 ** 4, 0.05)
    assert of[id(named["video.cls_token"])] == (0.5 ** 4, 0.0)
    assert of[id(named["video.pos_embed_temporal"])] == (0.5 ** 4, 0.0)
    for i in range(3):
        assert of[id(named[f"video.blocks.{i}.attn.qkv.weight"])] == (0.5 ** (3 - i), 0.05)
        assert of[id(named[f"video.blocks.{i}.norm1.weight"])] == (0.5 ** (3 - i), 0.0)
    assert of[id(named["head.weight"])] == (1.0, 0.05)
    assert of[id(named["fc_norm.bias"])] == (1.0, 0.0)
    assert of[id(named["video.norm.weight"])] == (1.0, 0.0)


class _Clips(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"clips": torch.randint(0, 255, (1, 3, 4, 16, 16), dtype=torch.uint8,
                                       generator=g),
                "label": i % 2, "item_id": str(i), "skipped": []}


def test_the_trainer_applies_each_groups_lr_scale(tmp_path):
    model = VideoClassifier(_vit(depth=3), classes=2)
    groups = layer_decay_groups(model, 0.05, 0.5, depth=3)
    cfg = FinetuneConfig(epochs=2, batch_size=4, lr=0.2, warmup_epochs=0.0,
                         loader_workers=0, precision="fp32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, ClassifyTask(None, 0.1), cfg, _Clips(), None, labelled_collate,
                      tmp_path, CPU, 0, {"t": 1}, "val/top1", "max", param_groups=groups)
    trainer.fit(max_steps=1)
    lr = lr_at(0.5, 0.2, "cosine", 2, [], 0.0)  # one of two batches of the first epoch done
    scales = sorted({g["lr_scale"] for g in trainer.optimizer.param_groups})
    assert scales == [0.5 ** k for k in (4, 3, 2, 1, 0)]
    for g in trainer.optimizer.param_groups:
        assert g["lr"] == pytest.approx(lr * g["lr_scale"])
    # AdamW's first step moves each weight by about its lr: the embedding 16x less than the head
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert moved["video.patch_embed.proj.weight"] < moved["head.weight"] / 8


# ---------------------------------------------------------------- mixup / cutmix
def test_mixup_targets_sum_to_one_and_cutmix_boxes_every_frame_alike():
    video = torch.rand(4, 3, 4, 16, 16)
    original = video.clone()
    labels = torch.tensor([0, 1, 2, 3])
    np.random.seed(3)
    mixed, target = ClipMixup(5, mixup=0.0, cutmix=1.0, label_smoothing=0.1)(video, labels)
    torch.testing.assert_close(video, original)  # the input is not mixed in place
    assert target.shape == (4, 5)
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    changed = (mixed != video).any(dim=1)  # (B, T, H, W)
    assert changed.any() and not changed.all()
    # one box over (H, W), the same in every frame (timm alone would box over (T, H))
    assert (changed == changed[:, :1]).all()
    # the soft target gives the partner clip the share of the box
    area = changed[0, 0].float().mean()
    assert target[0, 3] == pytest.approx(0.1 / 5 + 0.9 * float(area), abs=1e-6)

    np.random.seed(4)
    mixed, target = ClipMixup(5, mixup=0.8, cutmix=0.0, label_smoothing=0.0)(video, labels)
    lam = float(target[0, 0])
    torch.testing.assert_close(mixed, lam * video + (1 - lam) * video.flip(0))
    torch.testing.assert_close(target.sum(1), torch.ones(4))

    odd, target = ClipMixup(5, 0.8, 1.0, label_smoothing=0.1)(video[:3], labels[:3])
    assert torch.equal(odd, video[:3])  # an odd batch is not mixed, only smoothed
    torch.testing.assert_close(target.sum(1), torch.ones(3))
    assert target.argmax(1).tolist() == [0, 1, 2]


# ---------------------------------------------------------------- RandAugment
def test_randaugment_draws_once_per_clip_for_all_its_frames():
    aug = ClipRandAugment("rand-m9-n3-mstd0.5", 32)
    frame = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    clip = np.stack([frame] * 4)
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    out = aug(clip, np.random.default_rng(1))
    assert random.getstate() == py_state  # the caller's generators are left alone
    assert (np.random.get_state()[1] == np_state).all()
    assert all(np.array_equal(out[t], out[0]) for t in range(4))  # one draw for the clip
    np.testing.assert_array_equal(aug(clip, np.random.default_rng(1)), out)
    others = [aug(clip, np.random.default_rng(s)) for s in range(2, 8)]
    assert any(not np.array_equal(o, out) for o in others)  # other clips, other draws
    assert not all(np.array_equal(o[0], frame) for o in [out, *others])


# ---------------------------------------------------------------- multi-view test
def test_average_views_is_the_mean_of_each_clips_softmaxes():
    logits = torch.randn(3 * 6, 5)
    probs = average_views(logits, 6)
    expected = torch.stack([F.softmax(logits[i * 6:(i + 1) * 6], -1).mean(0) for i in range(3)])
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-clips")
    paths = [make_video(root / f"c{i}.mp4", seconds=2.0, fps=8, size=(24, 20), audio=False,
                        seed=i) for i in range(6)]
    return [(f"c{i}", str(p), "even" if i % 2 == 0 else "odd") for i, p in enumerate(paths)]


class _Brightness(torch.nn.Module):
    """Logits that only a clip's own view can give: its mean value and minus it."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        m = clips.mean(dim=(1, 2, 3, 4))
        return torch.stack([m, -m], dim=1)


def test_predict_views_averages_the_views_of_each_clip(labelled):
    from tvts.data.labelled import LabelledClips, LabelledItem
    from tvts.data.transforms import normalize

    items = [LabelledItem(i, u, 0) for i, u, _ in labelled[:3]]
    spec = ViewSpec(4, 16, 18, "pyav", temporal=2, spatial=3)
    ids, probs, failed = predict_views(_Brightness(), items, spec, torch.device("cpu"), 2)
    assert ids == ["c0", "c1", "c2"] and not failed and probs.shape == (3, 2)
    views = LabelledClips(items, 4, 16, 18, "pyav", False, 2, 3)
    for row in range(3):
        clips = normalize(views[row]["clips"])
        assert clips.shape[0] == 6
        expected = average_views(_Brightness()(clips), 6)[0]
        np.testing.assert_allclose(probs[row], expected.numpy(), rtol=1e-5)


def test_finetune_classification_runs_and_is_reused(labelled, tmp_path, monkeypatch):
    spec = ViewSpec(4, 16, 18, "pyav", 1, 1)
    data = ClassifyData(labelled[:4], labelled[4:], spec, ViewSpec(4, 16, 18, "pyav", 2, 3))
    cfg = FinetuneConfig(epochs=2, batch_size=2, loader_workers=0, warmup_epochs=0.5,
                         randaugment="rand-m7-n2-mstd0.5-inc1", precision="fp32")
    vit = _vit(depth=2)
    res = finetune_classification(vit, data, cfg, 2, tmp_path / "run", CPU, 0, "w1")
    assert res.ids == ["c4", "c5"] and res.actual == ["even", "odd"]
    assert res.classes == ["even", "odd"] and res.probabilities.shape == (2, 2)
    assert res.metrics["steps"] == 4 and {"top1", "top5", "chance_top1"} <= set(res.metrics)
    assert len(list((tmp_path / "run" / "results").glob("*.npz"))) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()  # the optimiser state is dropped
    assert (tmp_path / "run" / "dvclive").exists()
    # the encoder given is not changed: a copy is fine-tuned
    torch.testing.assert_close(vit.state_dict(), _vit(depth=2).state_dict())
    def fit(self, *args):
        raise RuntimeError("trained again")

    monkeypatch.setattr(Trainer, "fit", fit)
    again = finetune_classification(vit, data, cfg, 2, tmp_path / "run", CPU, 0, "w1")
    np.testing.assert_array_equal(again.probabilities, res.probabilities)
    (saved,) = (tmp_path / "run" / "results").glob("*.npz")
    assert FinetuneResult.load(saved, "other") is None
    with pytest.raises(RuntimeError, match="trained again"):  # other weights: a new run
        finetune_classification(vit, data, cfg, 2, tmp_path / "run", CPU, 0, "w2")
    with pytest.raises(RuntimeError, match="trained again"):  # another test batch
        finetune_classification(vit, data, cfg, 2, tmp_path / "run", CPU, 0, "w1", test_batch=3)
    import tvts.eval.finetune as finetune_module

    # an edit of the code that fine-tunes (e.g. the head's module): a new run, not the cache
    monkeypatch.setattr(finetune_module, "code_digest", lambda *modules: "edited")
    with pytest.raises(RuntimeError, match="trained again"):
        finetune_classification(vit, data, cfg, 2, tmp_path / "run", CPU, 0, "w1")
    # the edit reverted: the first result is still there, served without training
    monkeypatch.undo()
    monkeypatch.setattr(Trainer, "fit", fit)
    back = finetune_classification(vit, data, cfg, 2, tmp_path / "run", CPU, 0, "w1")
    np.testing.assert_array_equal(back.probabilities, res.probabilities)


# ---------------------------------------------------------------- SVO probes
def test_svo_precision_per_concept_at_each_threshold():
    from tvts.eval.svo import svo_metrics

    pos = np.array([0.3, 0.1, 0.26, 0.5])
    neg = np.array([0.22, 0.0, 0.3, 0.1])
    m = svo_metrics(pos, neg, ["subj", "subj", "verb", "obj"], [0.2, 0.25])
    assert m["subj@0.2"] == 0.5  # one positive and one negative above 0.2
    assert m["subj@0.25"] == 1.0
    assert m["verb@0.2"] == m["verb@0.25"] == 0.5
    assert m["obj@0.2"] == 1.0
    assert (m["subj_pair_acc"], m["verb_pair_acc"], m["obj_pair_acc"]) == (1.0, 0.0, 1.0)
    assert (m["subj_probes"], m["verb_probes"], m["obj_probes"]) == (2, 1, 1)
    none = svo_metrics(pos, neg, ["subj"] * 4, [0.9])
    assert none["subj@0.9"] is None and none["verb_pair_acc"] is None


def test_svo_probes_adapter_reads_the_release_format_and_quarantines(micro_demo, tmp_path):
    from tvts.downstream.svo import read_svo_probes
    from tvts.errors import UserError

    root = tmp_path / "svo"
    shutil.copytree(micro_demo.downstream_dir / "svo", root)
    probes, bad = read_svo_probes(root)
    n = len(probes)
    assert n >= 3 and not bad
    assert {p["neg_type"] for p in probes} == {"subj", "verb", "obj"}
    first = probes[0]
    (root / "images" / f"{first['pos_uri'].rsplit('/', 1)[1]}").unlink()
    with open(root / "svo_probes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["verb_neg"] = rows[1]["subj_neg"] = "True"
    rows[1]["obj_neg"] = "False"
    with open(root / "svo_probes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    probes, bad = read_svo_probes(root)
    assert len(probes) == n - 2
    reasons = {b["video_id"]: b["reason"] for b in bad}
    assert "not found" in reasons[f"svo_probes/{first['probe_id']}"]
    assert "exactly one of subj/verb/obj" in reasons["svo_probes/1"]
    (root / "svo_probes.csv").write_text("sentence,pos_triplet\nx,y\n")
    with pytest.raises(UserError, match="lacks the column"):
        read_svo_probes(root)


def test_downstream_stage_writes_the_probes_and_quarantines_missing_images(micro_demo,
                                                                          tmp_path):
    from tvts.config import resolve
    from tvts.stages import downstream as downstream_stage
    from tvts.tables import read_table

    root = tmp_path / "svo"
    shutil.copytree(micro_demo.downstream_dir / "svo", root)
    gone = sorted((root / "images").iterdir())[0]
    gone.unlink()
    params = resolve({"downstream": {"sets": {"ssv2": "demo"}, "workers": 1,
                                     "svo": {"root": str(root)}}})
    downstream_stage.run(params, tmp_path / "out", tmp_path / "m.json",
                         demo_root=micro_demo.downstream_dir)
    probes = read_table(tmp_path / "out" / "svo_probes.parquet", "svo_probes")
    bad = read_table(tmp_path / "out" / "quarantine.parquet", "quarantine")
    assert probes.height + bad.height == len(list(csv.DictReader(
        (root / "svo_probes.csv").open(newline=""))))
    assert bad.height == 1 and gone.stem in bad["reason"][0]
    assert all(p.startswith(str(root)) for p in probes["pos_uri"])


def test_a_killed_fine_tuning_resumes_exactly_and_a_changed_one_starts_over(labelled, tmp_path,
                                                                           monkeypatch):
    spec = ViewSpec(4, 16, 18, "pyav", 1, 1)
    data = ClassifyData(labelled[:4], labelled[4:], spec, ViewSpec(4, 16, 18, "pyav", 1, 2))
    # the paper's augmentations and dropout: the resumed run must restore every generator
    cfg = FinetuneConfig(epochs=2, batch_size=2, loader_workers=0, warmup_epochs=0.5,
                         mixup=0.8, cutmix=1.0, randaugment="rand-m7-n4-mstd0.5-inc1",
                         drop_path=0.3, head_dropout=0.2, precision="fp32")
    whole = finetune_classification(_vit(depth=2), data, cfg, 2, tmp_path / "whole", CPU, 0,
                                    "w1")
    fit = Trainer.fit

    def killed(self, max_steps=None):
        fit(self, max_steps=3)  # checkpoints after step 3 of 4, then dies
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune_classification(_vit(depth=2), data, cfg, 2, tmp_path / "run", CPU, 0, "w1")
    assert list((tmp_path / "run" / "checkpoints").glob("step-*.pt"))
    monkeypatch.setattr(Trainer, "fit", fit)
    resumes: list[bool] = []
    resume = Trainer.resume
    monkeypatch.setattr(Trainer, "resume", lambda self: resumes.append(resume(self)) or
                        resumes[-1])
    resumed = finetune_classification(_vit(depth=2), data, cfg, 2, tmp_path / "run", CPU, 0,
                                      "w1")
    assert resumes == [True]  # it went on from step 3, not from scratch
    assert resumed.metrics["steps"] == whole.metrics["steps"] == 4
    np.testing.assert_array_equal(resumed.probabilities, whole.probabilities)

    # killed again, then the weights change: the other run's checkpoint is not resumed
    monkeypatch.setattr(Trainer, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune_classification(_vit(depth=2), data, cfg, 2, tmp_path / "other", CPU, 0, "w1")
    monkeypatch.setattr(Trainer, "fit", fit)
    other = finetune_classification(_vit(depth=3), data, cfg, 2, tmp_path / "other", CPU, 0,
                                    "w2")
    assert resumes[1:] == [False, False] and other.metrics["steps"] == 4  # fresh, fresh


# the recipe both layouts run: RandAugment draws per sample; no drop path or dropout, whose
# masks each process draws from its own stream
_DDP_RECIPE = {"epochs": 2, "batch_size": 4, "loader_workers": 0, "warmup_epochs": 0.5,
               "randaugment": "rand-m7-n4-mstd0.5-inc1", "drop_path": 0.0,
               "precision": "fp32"}


@pytest.mark.slow
def test_two_process_fine_tuning_matches_one_process(labelled, tmp_path):
    """Evaluate's fine-tuning in two processes of its own launch (launch.nproc_per_node = 2)
    trains as one process does."""
    torch.set_num_threads(1)
    spec = ViewSpec(4, 16, 18, "pyav", 1, 1)
    data = ClassifyData(labelled[:4], labelled[4:], spec, ViewSpec(4, 16, 18, "pyav", 2, 3))
    one = finetune_classification(_vit(depth=2), data, FinetuneConfig(**_DDP_RECIPE), 2,
                                  tmp_path / "one", CPU, 0, "w1")
    # two gloo processes started by the launch the evaluate stage uses (launch.nproc_per_node)
    from tvts.config import LaunchConfig
    from tvts.train.launch import launch_function, launches_workers

    two_processes = LaunchConfig(nproc_per_node=2)
    assert launches_workers(two_processes) and not launches_workers(LaunchConfig())
    launched = launch_function(finetune_classification, {
        "video": _vit(depth=2), "data": data, "cfg": FinetuneConfig(**_DDP_RECIPE),
        "epochs": 2, "out_dir": tmp_path / "two", "seed": 0, "weights": "w1"},
        two_processes, "finetune")
    (fp,) = [p.stem for p in (tmp_path / "one" / "results").glob("*.npz")]
    two = FinetuneResult.load(tmp_path / "two" / "results" / f"{fp}.npz", fp)
    assert two is not None  # the same fingerprint: the process layout is not part of it
    assert launched.metrics == two.metrics  # rank 0's result came back
    assert two.metrics["steps"] == one.metrics["steps"] == 2
    # each process trained on its half of every batch, DDP averaged the gradients: the same
    # updates as one process on the whole batch
    assert two.metrics["train_loss"] == pytest.approx(one.metrics["train_loss"], rel=1e-5)
    np.testing.assert_allclose(two.probabilities, one.probabilities, atol=1e-5)


def test_training_protocols_name_the_fix_for_a_split_they_cannot_use():
    import polars as pl

    from tvts.config import resolve
    from tvts.errors import UserError
    from tvts.eval.protocols import SetSplits, set_splits
    from tvts.eval.trained_protocols import finetune_set, has_captioned_train, t2v_finetune_set
    from tvts.tables import frame

    rows = [{"downstream_set": "s", "downstream_id": f"c{i}", "uri": f"/x/c{i}.mp4",
             "split": "train" if i < 3 else "test", "label": "ab"[i % 2],
             "captions": [] if i < 3 else ["a caption"], "duration_s": 2.0} for i in range(5)]
    splits = set_splits(frame(rows, "downstream"))
    params = resolve({})
    spec = ViewSpec(4, 16, 18, "pyav", 1, 1)
    with pytest.raises(UserError, match=r"evaluate.finetune.batch_size to at most 3"):
        finetune_set(params, "ssv2", splits, spec, {}, Path("/nonexistent"), CPU)
    assert not has_captioned_train(splits)
    with pytest.raises(UserError, match="t2v_finetune needs captioned clips"):
        t2v_finetune_set(params, "s", splits, spec, {}, None, Path("/n"), Path("/n"), CPU)
    captioned = splits.train.with_columns(pl.lit(["x"]).alias("captions"))
    assert has_captioned_train(SetSplits(captioned, splits.test, splits.test_split))
