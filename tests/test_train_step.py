"""The training step's speed levers: the optimiser kernels, and bench/train_step.py on the
micro model (reference-style beside ours and torch.compile, the same first loss)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tvts.train.optim import adamw

from .conftest import micro

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("impl", ["fused", "foreach", "for-loop"])
def test_adamw_kernels_take_the_same_step(impl):
    torch.manual_seed(0)
    ref = torch.nn.Linear(8, 4)
    model = torch.nn.Linear(8, 4)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(16, 8)
    opts = [adamw(m.parameters(), 1e-2, 0.05, torch.device("cpu"), i)
            for m, i in ((ref, "for-loop"), (model, impl))]
    for _ in range(3):
        for m, opt in zip((ref, model), opts, strict=True):
            m(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    assert opts[1].defaults["fused"] is (True if impl == "fused" else None)
    assert not torch.equal(ref.weight, torch.nn.Linear(8, 4).weight)  # it moved
    assert torch.allclose(ref.weight, model.weight, atol=1e-6)


def test_the_trainer_uses_the_configured_kernel():
    assert micro().pretrain.optimizer == "fused"
    assert micro({"pretrain": {"optimizer": "foreach"}}
                   ).pretrain.optimizer == "foreach"


@pytest.mark.slow
def test_bench_runs_reference_ours_and_compiled_steps_of_the_same_model(tmp_path):
    """Through bench/gpu_suite.sh, which on a machine without a GPU runs this bench at micro
    sizes on the CPU: the suite runs where CI runs, and names the device it ran on."""
    names = ("reference", "ours_fp32", "ours", "ours_compile")
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_suite.sh"), str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={**os.environ, "PARTS": "train_step"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert summary["device"] == "cpu" and summary["gpu"].startswith("none")
    assert set(summary["parts"]) == {"train_step"} and summary["parts"]["train_step"]["exit"] == 0
    result = json.loads((tmp_path / "gpu_suite" / "train_step.json").read_text())
    profile = result["profiles"]["micro"]
    runs = profile["runs"]
    assert set(runs) == set(names)
    for name, rows in runs.items():
        assert [r["batch"] for r in rows] == [2, 4]
        for r in rows:
            assert "error" not in r, (name, r)
            assert r["step_s"] > 0 and r["gflop_per_clip"] > 0
            assert 0 < r["utilisation"] < 2 and r["matmul_tflops"] > 0
            shares = r["forward_flop_share"]
            assert set(shares) >= {"video", "text", "sorter"}
            assert 0.98 < sum(shares.values()) <= 1.0 + 1e-9
    assert {r["dtype"] for r in runs["reference"] + runs["ours_fp32"]} == {"fp32"}
    # the levers change how, not what: the first step's loss is the same model's loss (to
    # fp32 rounding; to bf16's where "ours" computes in bf16, as on a CPU with bf16 units)
    for b in (0, 1):
        ref = runs["reference"][b]["first_loss"]
        assert runs["ours_fp32"][b]["first_loss"] == pytest.approx(ref, rel=1e-4)
        for name in ("ours", "ours_compile"):
            rel = 3e-2 if runs[name][b]["dtype"] == "bf16" else 1e-4
            assert runs[name][b]["first_loss"] == pytest.approx(ref, rel=rel), name
    # embedding only the kept patches counts fewer FLOPs than embed-then-drop
    assert runs["ours_fp32"][0]["gflop_per_clip"] < runs["reference"][0]["gflop_per_clip"]
    # compiled: a slow first step (the compilation), then steps like the others
    compiled = runs["ours_compile"][0]
    assert compiled["first_step_s"] > 3 * compiled["step_s"]
    summary = profile["summary"]
    assert "speedup_vs_reference_b2" in summary["ours"]
    assert "mem_per_sample_gib" in summary["ours"]


def test_cpu_compute_threads_leave_the_loader_workers_their_cores():
    from tvts.train.cpu import compute_threads, thread_budget

    assert compute_threads(2, cores=2) == 1  # the demo machine: never 0
    assert compute_threads(2, cores=16) == 14
    assert compute_threads(2, local_processes=2, cores=16) == 6  # 2 DDP processes, 8 each
    assert compute_threads(0, cores=2) == 2
    before = torch.get_num_threads()
    with thread_budget(loader_workers=10_000) as budget:
        assert budget == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before  # restored
    with thread_budget(loader_workers=0) as budget:  # never raised above the user's setting
        assert budget == before == torch.get_num_threads()


def test_auto_precision_is_bf16_on_a_gpu_and_on_a_cpu_with_bf16_units(monkeypatch):
    from tvts.train import loop

    monkeypatch.setattr(loop, "native_bf16", lambda: False)
    assert not loop.use_bf16("auto", torch.device("cpu"))
    assert loop.use_bf16("bf16", torch.device("cpu"))
    assert loop.use_bf16("auto", torch.device("cuda"))
    monkeypatch.setattr(loop, "native_bf16", lambda: True)
    assert loop.use_bf16("auto", torch.device("cpu"))
    assert not loop.use_bf16("fp32", torch.device("cpu"))
