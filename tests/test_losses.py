"""Losses: InfoNCE by hand, across a real 2-process gloo group, and the sort objectives."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tvts.losses import (
    group_ids,
    info_nce,
    permutation_index,
    predicted_order,
    sort_accuracy,
    sort_loss,
)
from tvts.models.sorter import permutations

from .conftest import free_port


def test_info_nce_equals_a_hand_computation():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    # cosine similarities: v0.t0 = 1, v0.t1 = 1/sqrt2, v1.t0 = 0, v1.t1 = 1/sqrt2
    s = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]) / tau

    def ce(row, i):
        return -(row[i] - torch.logsumexp(row, 0))

    v2t = (ce(s[0], 0) + ce(s[1], 1)) / 2
    t2v = (ce(s[:, 0], 0) + ce(s[:, 1], 1)) / 2
    assert torch.allclose(info_nce(v, t, tau), v2t + t2v)


def test_similarities_and_softmax_are_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    v, t = torch.randn(64, 256), torch.randn(64, 256)
    t[:32] = v[:32] + 0.3 * torch.randn(32, 256)  # some confident pairs: large logits
    exact = info_nce(v.double(), t.double(), 0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(v, t, 0.05)
        coarse = F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).T / 0.05  # what bf16 gives
    assert got.dtype == torch.float32
    assert abs(float(got) - float(exact)) < 1e-4
    assert coarse.dtype == torch.bfloat16  # the autocast is on: the loss opted out of it


def test_copies_of_one_video_are_not_each_others_negatives():
    # three videos, each sampled twice from one decoded span: identical transcripts, near
    # identical clips. As negatives, the copies put a floor of log(2) per direction
    torch.manual_seed(0)
    base = F.normalize(torch.randn(3, 32), dim=-1)
    v = base.repeat_interleave(2, 0) + 1e-3 * torch.randn(6, 32)
    t = base.repeat_interleave(2, 0)
    groups = group_ids(["a", "a", "b", "b", "c", "c"])
    assert float(info_nce(v, t, 0.01)) > 2 * math.log(2) - 0.05
    assert float(info_nce(v, t, 0.01, groups)) < 0.05
    # rows of different videos are unaffected by the grouping
    single = group_ids(["a", "b", "c", "d", "e", "f"])
    assert torch.equal(info_nce(v, t, 0.05, single), info_nce(v, t, 0.05))
    assert torch.equal(group_ids(["x"]), group_ids(["x"])) and group_ids(["x"]).item() >= 0


def _worker(rank: int, world: int, port: int, v: torch.Tensor, t: torch.Tensor, out: str,
            groups: torch.Tensor | None = None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = len(v) // world
        lv = v[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        lt = t[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        lg = None if groups is None else groups[rank * n : (rank + 1) * n]
        loss = info_nce(lv, lt, 0.05, lg)
        loss.backward()
        torch.save({"loss": loss.detach(), "gv": lv.grad, "gt": lt.grad}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("grouped", [False, True])
def test_gathered_loss_and_gradients_match_single_process(tmp_path, grouped):
    torch.manual_seed(0)
    v, t = torch.randn(8, 16), torch.randn(8, 16)
    # grouped: a video's rows on both ranks, masked across the gather as within one rank
    groups = group_ids(list("abcdabef")) if grouped else None
    out = str(tmp_path / "res")
    mp.spawn(_worker, args=(2, free_port(), v, t, out, groups), nprocs=2, join=True)
    sv, st = v.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loss = info_nce(sv, st, 0.05, groups)
    loss.backward()
    for rank in range(2):
        r = torch.load(f"{out}.{rank}", weights_only=True)
        assert torch.allclose(r["loss"], loss.detach(), atol=1e-6)
        assert torch.allclose(r["gv"], sv.grad[rank * 4 : (rank + 1) * 4], atol=1e-6)
        assert torch.allclose(r["gt"], st.grad[rank * 4 : (rank + 1) * 4], atol=1e-6)


def test_kway_loss_and_accuracy():
    order = torch.tensor([[2, 0, 1]])
    logits = torch.full((1, 3, 3), -5.0)
    logits[0, 0, 2] = logits[0, 1, 0] = logits[0, 2, 1] = 5.0
    assert torch.allclose(sort_loss(logits, order, "kway"),
                          F.cross_entropy(logits[0], order[0]))
    assert [float(a) for a in sort_accuracy(logits, order, "kway")] == [1.0, 1.0]
    logits[0, 2] = torch.tensor([5.0, -5.0, -5.0])  # third transcript wrong
    acc, seq = sort_accuracy(logits, order, "kway")
    assert float(acc) == pytest.approx(2 / 3) and float(seq) == 0.0


def test_pairwise_targets_and_decoding():
    order = torch.tensor([[2, 0, 1]])
    before = (order[:, :, None] < order[:, None, :]).float()
    logits = (before * 2 - 1) * 10  # confident and right
    assert predicted_order(logits, "pairwise", 3).tolist() == order.tolist()
    assert float(sort_loss(logits, order, "pairwise")) < 1e-3
    assert float(sort_loss(-logits, order, "pairwise")) > 5


def test_factorial_classes_are_the_permutations():
    perms = permutations(3)
    assert perms.shape == (6, 3) and perms[0].tolist() == [0, 1, 2]
    order = torch.tensor([[2, 0, 1], [0, 1, 2]])
    idx = permutation_index(order)
    assert perms[idx].tolist() == order.tolist()
    logits = F.one_hot(idx, 6).float() * 10
    assert predicted_order(logits, "factorial", 3).tolist() == order.tolist()
    assert float(sort_loss(logits, order, "factorial")) < 1e-3
