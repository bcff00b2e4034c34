"""How the stages launch (params `launch`): which stage is handed to the launcher under which
scheduler, the layout the batch rules check, and the Slurm job submitit writes for the params
(submitit's own executor and sbatch script; the cluster's `srun` is only looked up, never run
here). The launches themselves run in tests/test_train.py and tests/test_finetune.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tvts.config import LaunchConfig, ParamsError, resolve
from tvts.train.launch import launches_workers, should_launch
from tvts.train.submit import executor


def test_which_stage_the_launcher_takes():
    one, two = LaunchConfig(), LaunchConfig(nproc_per_node=2)
    slurm = LaunchConfig(scheduler="slurm")
    assert not should_launch("pretrain", one)  # auto: one process on a CPU
    assert should_launch("pretrain", two) and should_launch("post_pretrain", two)
    assert not should_launch("evaluate", two) and launches_workers(two)  # its fine-tuning
    assert should_launch("evaluate", slurm) and should_launch("pretrain", slurm)
    assert not any(should_launch(s, slurm) for s in ("corpus", "asr", "dedup", "pack"))


def test_inside_a_launch_nothing_launches_again(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not should_launch("pretrain", LaunchConfig(nproc_per_node=2))
    assert not launches_workers(LaunchConfig(nproc_per_node=2))


def test_the_batch_rules_check_the_layout_launch_asks_for():
    with pytest.raises(ParamsError, match="does not split over 3 processes"):
        resolve({"launch": {"nproc_per_node": 3}})
    with pytest.raises(ParamsError, match="needs rdzv_endpoint"):
        resolve({"launch": {"nnodes": 2}})
    assert resolve({"launch": {"nnodes": 2, "scheduler": "slurm"}}).launch.nnodes == 2


def test_the_slurm_job_submitit_writes_for_the_params(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    params = resolve({"launch": {"scheduler": "slurm", "nnodes": 2, "nproc_per_node": 4,
                                 "slurm": {"partition": "gpu", "account": "acc", "time_min": 600,
                                           "max_requeues": 5,
                                           "additional": {"constraint": "h100"}}}})
    train = executor(params.launch, "pretrain", tmp_path / "jobs")
    script = train._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--account=acc", "--constraint=h100", "--time=600", "--signal=USR2@90",
                 "--job-name=tvts-pretrain"):
        assert f"#SBATCH {line}" in script, line
    assert train._executor.max_num_timeout == 5  # requeues after preemption / time limit
    # evaluate: one task with the node's GPUs; its fine-tuning launches the processes
    evaluate = executor(params.launch, "evaluate", Path(tmp_path / "jobs"))
    assert {k: evaluate._executor.parameters[k] for k in ("nodes", "ntasks_per_node",
                                                          "gpus_per_node")} == {
        "nodes": 1, "ntasks_per_node": 1, "gpus_per_node": 4}
