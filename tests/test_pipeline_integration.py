"""The pipeline end to end through DVC, on the micro profile, in a scratch copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tvts.tables import read_table

from .conftest import REPO

pytestmark = pytest.mark.integration


def _sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "tvts", root / "tvts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "reviews", root / "reviews")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "micro"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh(["git", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    _sh(["git", "add", "-A"], root)
    _sh(["git", "commit", "-qm", "init"], root)
    return root


def test_dvc_repro_runs_the_pipeline(repo):
    _sh([sys.executable, "-m", "dvc", "repro"], repo)
    videos = read_table(repo / "data/corpus/videos.parquet", "videos")
    metrics = json.loads((repo / "metrics/corpus.json").read_text())
    resolved = yaml.safe_load((repo / "data/corpus/params.resolved.yaml").read_text())
    n = resolved["corpus"]["demo"]["num_videos"]
    assert resolved["profile"] == "micro" and len(videos) == metrics["videos"] == n
    assert metrics["planted_leaks"] > 0
    asr = json.loads((repo / "metrics/asr.json").read_text())
    assert asr["videos_done"] == n and asr["words"] > 40
    words = read_table(repo / "data/asr/words.parquet", "words")
    assert set(words["video_id"]) == set(videos["video_id"])
    validate = json.loads((repo / "metrics/validate.json").read_text())
    assert validate["pass_rate"] >= 0.5
    assert read_table(repo / "data/asr/valid.parquet", "videos").height == \
        validate["videos_passed"]
    assert (repo / "reports/asr_validation/index.html").exists()
    # dedup finds the planted leaks, and pretraining reads what it leaves
    dedup = json.loads((repo / "metrics/dedup.json").read_text())
    assert dedup["planted"]["pair_recall"] == dedup["planted"]["pair_precision"] == 1.0
    kept = read_table(repo / "data/dedup/videos.parquet", "videos")
    assert kept.height == validate["videos_passed"] - dedup["excluded_videos"] > 0
    assert (repo / "reports/leakage/index.html").exists()
    pre = json.loads((repo / "metrics/pretrain.json").read_text())
    assert pre["steps"] > 0 and "val_sort_acc" in pre
    assert (repo / "models/pretrain/encoder/model.safetensors").exists()
    assert json.loads((repo / "metrics/post_pretrain.json").read_text())["steps"] > 0
    assert (repo / "dvclive/pretrain/plots/metrics/train/loss.tsv").exists()
    # evaluate: every protocol of every set, for every encoder, and transcript sorting
    ev = json.loads((repo / "metrics/eval.json").read_text())
    encoders = {"pretrain", "post_pretrain", "random"}
    for set_name, protocol, key in [("ssv2", "linear", "top1"), ("ssv2", "attentive", "top1"),
                                    ("ssv2", "v2v", "R@1"), ("msrvtt", "t2v", "MedR")]:
        assert set(ev[set_name][protocol]) == encoders, (set_name, protocol)
        assert all(key in m for m in ev[set_name][protocol].values())
    sort = ev["transcripts"]["sort"]
    assert set(sort) == encoders
    assert {"acc_video", "acc_text_only", "seq_acc_video", "chance_seq_acc_permutation"} \
        <= set(sort["pretrain"])
    # the text-only control: a sorter trained as pretraining trains its own, without video
    control = ev["transcripts"]["text_only_sorter"]["pretrain"]
    assert {"acc", "seq_acc", "train_acc", "chance_acc"} <= set(control)
    assert control["train_videos"] == pre["train_videos"]
    assert control["held_out_samples"] > 0
    confusion = json.loads((repo / "reports/eval/confusion/ssv2-pretrain.json").read_text())
    assert len(confusion) == ev["ssv2"]["linear"]["pretrain"]["test_clips"]
    assert (repo / "reports/eval/summary.md").read_text().startswith("| set |")
    # cached: a second repro only lists the sources again, and that changes nothing
    status = json.loads(_sh([sys.executable, "-m", "dvc", "status", "--json"], repo))
    assert status == {"sources": ["always changed"]}, status
    again = _sh([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage 'sources'" in again and again.count("didn't change") == 8, again


def test_dvc_exp_run_with_a_params_override(repo):
    base = json.loads((repo / "metrics/pretrain.json").read_text())
    _sh([sys.executable, "-m", "dvc", "exp", "run", "-S", "sort.lambda=0.5"], repo)
    show = json.loads(_sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo))
    runs = [exp for commit in show for exp in (commit.get("experiments") or [])]
    assert runs, show
    data = runs[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["sort"]["lambda"] == 0.5
    pre = data["metrics"]["metrics/pretrain.json"]["data"]
    # the sort loss weighs less in the recorded training loss: other metrics were recorded
    assert pre["train_loss"] != base["train_loss"]
    assert pre["train_loss"] == pytest.approx(
        pre["train_loss_contrastive"] + 0.5 * pre["train_loss_sort"], rel=1e-3)
