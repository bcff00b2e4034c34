"""The frozen-encoder protocols over cached features: linear and attentive probes,
video-to-video retrieval and zero-shot text-to-video retrieval.

Splits: a set's probe trains on its `train` rows and tests on `test` when that split carries
labels or captions, else on `val` (SSV2 and Kinetics test labels are not public). Rows without
a split (a directory of clips) are split by a hash of their id, a fifth to test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from tvts.errors import UserError
from tvts.eval.features import ClipFeatures
from tvts.eval.probes import ProbeResult, ProbeSettings, attentive_probe, linear_probe
from tvts.metrics import label_retrieval, retrieval_metrics

HASH_TEST_SHARE = 0.2


def _hash_split(item_id: str) -> str:
    h = int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big")
    return "test" if h / 2**64 < HASH_TEST_SHARE else "train"


@dataclass
class SetSplits:
    train: pl.DataFrame
    test: pl.DataFrame
    test_split: str  # the manifest split the test rows come from


def set_splits(manifest: pl.DataFrame) -> SetSplits:
    """Train and test rows of a manifest (see the module docstring)."""
    df = manifest.with_columns(
        pl.when(pl.col("split").is_null())
        .then(pl.col("downstream_id").map_elements(_hash_split, return_dtype=pl.Utf8))
        .otherwise(pl.col("split")).alias("split"))
    usable = pl.col("label").is_not_null() | (pl.col("captions").list.len() > 0)
    test_split = "test" if df.filter((pl.col("split") == "test") & usable).height else "val"
    return SetSplits(df.filter(pl.col("split") == "train"),
                     df.filter((pl.col("split") == test_split) & usable), test_split)


@dataclass
class Classified:
    metrics: dict[str, float]
    actual: list[str]
    predicted: list[str]


def _labelled(feats: ClipFeatures, rows: pl.DataFrame, classes: dict[str, int] | None
              ) -> tuple[ClipFeatures, np.ndarray, list[str]]:
    rows = rows.filter(pl.col("label").is_not_null())
    label_of = dict(zip(rows["downstream_id"], rows["label"], strict=True))
    have = set(feats.ids)
    ids = [i for i in rows["downstream_id"] if i in have
           and (classes is None or label_of[i] in classes)]
    sub = feats.select(ids)
    labels = [label_of[i] for i in sub.ids]
    return sub, np.array([classes[x] for x in labels] if classes else []), labels


def classify(kind: str, train_feats: ClipFeatures, train_rows: pl.DataFrame,
             test_feats: ClipFeatures, test_rows: pl.DataFrame, settings: ProbeSettings,
             pooling: str = "cls", progress: Callable[[int], None] | None = None
             ) -> Classified:
    """`linear` (pooled features) or `attentive` (patch tokens) probe: top-1 and top-5 over the
    test clips whose class occurs in training."""
    train_labels = sorted(set(train_rows["label"].drop_nulls()))
    if len(train_labels) < 2:
        raise UserError(f"the {kind} probe needs labelled training clips of at least two "
                        f"classes; this set's train split has {len(train_labels)}")
    classes = {c: i for i, c in enumerate(train_labels)}
    tr, ytr, _ = _labelled(train_feats, train_rows, classes)
    te, yte, names = _labelled(test_feats, test_rows, classes)
    if not len(te.ids):
        raise UserError(f"the {kind} probe has no test clip of a class seen in training")
    probe: Callable[..., ProbeResult]
    if kind == "linear":
        arr = tr.cls if pooling == "cls" else tr.mean
        test_arr = te.cls if pooling == "cls" else te.mean
        probe, x, x_test = linear_probe, arr[:, 0], test_arr
    else:
        probe, x, x_test = attentive_probe, tr.tokens[:, 0], te.tokens
    res = probe(x, ytr, x_test, yte, len(classes), settings, progress)
    metrics = res.metrics | {"train_clips": len(tr.ids), "test_clips": len(te.ids),
                             "classes": len(classes), "chance_top1": 100 / len(classes)}
    return Classified(metrics, names, [train_labels[i] for i in res.predicted])


def _unit(x: np.ndarray) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def video_to_video(train_feats: ClipFeatures, train_rows: pl.DataFrame,
                   test_feats: ClipFeatures, test_rows: pl.DataFrame, ks: Sequence[int],
                   pooling: str = "cls") -> dict[str, float]:
    """Zero-shot: each test clip (views averaged) queries every clip of the set (train and
    test, itself excluded) by cosine similarity; a hit at k when one of the k nearest shares
    its label."""
    q, _, q_labels = _labelled(test_feats, test_rows, None)
    g_train, _, g_train_labels = _labelled(train_feats, train_rows, None)
    arr = "cls" if pooling == "cls" else "mean"
    query = _unit(getattr(q, arr).mean(1))
    gallery = torch.cat([_unit(getattr(g_train, arr).mean(1)), query])
    names = sorted(set(q_labels) | set(g_train_labels))
    code = {n: i for i, n in enumerate(names)}
    q_lab = torch.tensor([code[x] for x in q_labels])
    g_lab = torch.tensor([code[x] for x in g_train_labels + q_labels])
    exclude = torch.arange(len(q.ids)) + len(g_train.ids)
    if len(q.ids) < 1 or len(gallery) < 2:
        raise UserError("video-to-video retrieval needs labelled clips to query and to find")
    if len(names) < 2:
        # every neighbour would share the query's label: R@1 = 100 for any encoder, random
        # weights included, as the probes and fine-tuning refuse such a set
        raise UserError(f"video-to-video retrieval needs clips of at least two classes; this "
                        f"set has {len(names)} ({', '.join(map(repr, names))}), so any "
                        "encoder would score 100")
    out = label_retrieval(query @ gallery.T, q_lab, g_lab, tuple(ks), exclude)
    # R@1 of a neighbour drawn at random: the share of the gallery (the query left out)
    # that shares the query's label
    same = (q_lab[:, None] == g_lab[None, :]).sum(1) - 1
    chance = float((same / (len(gallery) - 1)).mean()) * 100
    return out | {"queries": len(q.ids), "gallery": len(gallery) - 1,
                  "chance_r1": round(chance, 2)}


@torch.no_grad()
def encode_captions(model: Any, tokenizer: Any, captions: Sequence[str], max_tokens: int,
                    device: torch.device, batch: int = 64) -> torch.Tensor:
    """Captions -> the model's text vectors in the contrastive space, unit length."""
    out = []
    for i in range(0, len(captions), batch):
        enc = tokenizer(list(captions[i:i + batch]), padding=True, truncation=True,
                        max_length=max_tokens, return_tensors="pt")
        feats = model.text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        out.append(F.normalize(model.proj.text(feats).float(), dim=-1).cpu())
    return torch.cat(out)


def text_to_video(model: Any, tokenizer: Any, test_feats: ClipFeatures,
                  test_rows: pl.DataFrame, ks: Sequence[int], max_tokens: int,
                  device: torch.device) -> dict[str, float]:
    """Zero-shot: every caption of a test clip is a query over the test clips (views
    averaged, in the contrastive space); its clip is the ground truth."""
    rows = test_rows.filter(pl.col("captions").list.len() > 0)
    have = set(test_feats.ids)
    rows = rows.filter(pl.col("downstream_id").is_in(list(have)))
    feats = test_feats.select(rows["downstream_id"].to_list())
    if len(feats.ids) < 2:
        raise UserError("text-to-video retrieval needs at least two captioned test clips")
    col = {k: i for i, k in enumerate(feats.ids)}
    queries, targets = [], []
    for vid, caps in zip(rows["downstream_id"], rows["captions"], strict=True):
        for c in caps:
            queries.append(c)
            targets.append(col[vid])
    videos = F.normalize(torch.as_tensor(feats.vec, dtype=torch.float32).mean(1), dim=-1)
    text = encode_captions(model, tokenizer, queries, max_tokens, device)
    out = retrieval_metrics(text @ videos.T, tuple(ks), torch.tensor(targets))
    return out | {"queries": len(queries), "videos": len(feats.ids)}
