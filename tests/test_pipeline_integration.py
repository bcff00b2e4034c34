"""The pipeline end to end through DVC, on the micro profile, in a scratch copy of the repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tvts.tables import read_table

from .browser import dump_dom, ink, remote_references, screenshot
from .conftest import REPO, scratch_project, stage_record

pytestmark = pytest.mark.integration


def _sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = scratch_project(tmp_path_factory.mktemp("repo"), ("tvts", "reviews"))
    _sh(["git", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    # the project's: plots.html_template and the committed page template it names
    for name in ("config", ".gitignore", "offline_plots.html"):
        shutil.copy(REPO / ".dvc" / name, root / ".dvc" / name)
    _sh(["git", "add", "-A"], root)
    _sh(["git", "commit", "-qm", "init"], root)
    return root


def test_dvc_repro_runs_the_pipeline(repo):
    _sh([sys.executable, "-m", "dvc", "repro"], repo)
    videos = read_table(repo / "data/corpus/videos.parquet", "videos")
    metrics = stage_record(repo / "metrics/corpus.json")
    resolved = yaml.safe_load((repo / "data/corpus/params.resolved.yaml").read_text())
    n = resolved["corpus"]["demo"]["num_videos"]
    assert resolved["profile"] == "micro" and len(videos) == metrics["videos"] == n
    assert metrics["planted_leaks"] > 0
    asr = stage_record(repo / "metrics/asr.json")
    assert asr["videos_done"] == n and asr["words"] > 40
    words = read_table(repo / "data/asr/words.parquet", "words")
    assert set(words["video_id"]) == set(videos["video_id"])
    validate = stage_record(repo / "metrics/validate.json")
    assert validate["pass_rate"] >= 0.5
    assert read_table(repo / "data/asr/valid.parquet", "videos").height == \
        validate["videos_passed"]
    assert (repo / "reports/asr_validation/index.html").exists()
    # dedup finds the planted leaks, and pretraining reads what it leaves
    dedup = stage_record(repo / "metrics/dedup.json")
    assert dedup["planted"]["pair_recall"] == dedup["planted"]["pair_precision"] == 1.0
    kept = read_table(repo / "data/dedup/videos.parquet", "videos")
    assert kept.height == validate["videos_passed"] - dedup["excluded_videos"] > 0
    assert (repo / "reports/leakage/index.html").exists()
    # pretraining reads the frames the pack stage decoded once into JPEG shards
    pack = stage_record(repo / "metrics/pack.json")
    assert pack["enabled"] and pack["videos_packed"] == kept.height
    assert pack["videos_quarantined"] == 0 and pack["frames"] > 0
    index = read_table(repo / "data/pack/index.parquet", "pack_index")
    assert set(index["video_id"]) == set(kept["video_id"])
    assert all((repo / "data/pack/shards" / s).stat().st_size > 0 for s in set(index["shard"]))
    pre = stage_record(repo / "metrics/pretrain.json")
    assert pre["steps"] > 0 and "val_sort_acc" in pre
    assert (repo / "models/pretrain/encoder/model.safetensors").exists()
    assert json.loads((repo / "metrics/post_pretrain.json").read_text())["steps"] > 0
    assert (repo / "dvclive/pretrain/plots/metrics/train/loss.tsv").exists()
    # evaluate: every protocol of every set, for every encoder, and transcript sorting
    ev = stage_record(repo / "metrics/eval.json")
    encoders = {"pretrain", "post_pretrain", "random"}
    for set_name, protocol, key in [("ssv2", "linear", "top1"), ("ssv2", "attentive", "top1"),
                                    ("ssv2", "v2v", "R@1"), ("msrvtt", "t2v", "MedR")]:
        assert set(ev[set_name][protocol]) == encoders, (set_name, protocol)
        assert all(key in m for m in ev[set_name][protocol].values())
    # the protocols that train: classification and retrieval fine-tuning, each encoder
    for set_name, protocol, keys in [("ssv2", "finetune", {"top1", "top5", "steps"}),
                                     ("msrvtt", "t2v_finetune", {"R@1", "MedR", "train_steps"})]:
        assert set(ev[set_name][protocol]) == encoders, (set_name, protocol)
        assert all(keys <= set(m) for m in ev[set_name][protocol].values())
    assert ev["ssv2"]["finetune"]["pretrain"]["steps"] > 0
    assert ev["msrvtt"]["t2v_finetune"]["pretrain"]["train_pairs"] > 0
    assert list((repo / "data/eval/finetune/ssv2/pretrain/results").glob("*.npz"))
    assert (repo / "reports/eval/figures/top5-ssv2.png").stat().st_size > 0
    svo = ev["svo_probes"]["svo"]
    assert set(svo) == encoders
    assert {"subj@0.2", "verb@0.25", "obj@0.3", "verb_pair_acc"} <= set(svo["pretrain"])
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
    assert status == {"sources": ["always changed"], "reports": ["always changed"]}, status
    again = _sh([sys.executable, "-m", "dvc", "repro"], repo)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    cached = [s for s, spec in stages.items() if not spec.get("always_changed")]
    assert "Running stage 'sources'" in again, again
    assert all(f"Stage '{s}' didn't change" in again for s in cached), again


def _table_columns(text: str) -> list[str]:
    """The header of a table `dvc metrics show` prints (columns apart by 2+ spaces)."""
    header = next(line for line in text.splitlines() if line.strip())
    return re.split(r"\s{2,}", header.strip())


def test_metrics_show_is_readable(repo):
    shown = _sh([sys.executable, "-m", "dvc", "metrics", "show"], repo)
    columns = _table_columns(shown)
    assert columns[0] == "Path" and len(columns) <= 25, columns
    rows = {line.split()[0] for line in shown.splitlines()[1:] if line.strip()}
    assert rows == {f"metrics/{s}.json" for s in ("corpus", "asr", "validate", "downstream",
                                                  "dedup", "pack", "pretrain",
                                                  "post_pretrain", "eval")}, rows
    # the funnel a user reads across stages shares its column names
    assert {"videos", "quarantined", "val_sort_acc", "ssv2.linear_top1.pretrain"} <= \
        set(columns)
    # no per-expectation flag, no dvclive duplicate
    assert not any(c.startswith(("expectations", "train.", "val.")) for c in columns)


def test_reports_work_offline(repo, tmp_path):
    index = repo / "reports/index.html"
    html = index.read_text()
    for target in ("asr_validation/index.html", "leakage/index.html", "pretrain/curves.png",
                   "post_pretrain/curves.png", "eval/figures/confusion-ssv2-pretrain.png"):
        assert f'"{target}"' in html, target
        assert (repo / "reports" / target).exists(), target
    pages = [*(repo / "reports").rglob("*.html")]
    assert len(pages) >= 7
    for page in pages:
        assert remote_references(page.read_text()) == [], page
    assert ink(screenshot(index, tmp_path / "index.png", size="1200,2400")) > 0.03
    assert dump_dom(repo / "reports/asr_validation/index.html").count('data-index="') >= 2
    # `dvc plots show`, as a user types it: the project's template, no CDN
    _sh([sys.executable, "-m", "dvc", "plots", "show"], repo)
    plots = repo / "dvc_plots/index.html"
    assert remote_references(plots.read_text()) == []
    assert dump_dom(plots).count('class="marks"') >= 10  # every curve and confusion matrix


MICRO_GRID = """
name: micro
title: micro grid
targets: [evaluate]
base:
  evaluate.encoders: [pretrain, init, random]
  evaluate.tasks: {ssv2: [linear, v2v]}
  evaluate.sort.enabled: false
seeds: {param: pretrain.seed, values: [0, 1]}
columns:
  - {set: ssv2, protocol: linear, label: linear}
  - {set: ssv2, protocol: v2v, label: v2v}
paper: [{label: "paper (table 2)"}]
variants:
  - {name: start, label: start point, encoder: init, paper: [64.5]}
  - {name: base, label: L_base, set: {sort.lambda: 0.0}, paper: [67.0]}
  - {name: ours, label: TVTS, paper: [68.5]}
"""


def _ledger(repo: Path) -> list[dict]:
    path = repo / "reports/ablations/micro/cells.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ablate(repo: Path, grid: Path, *args: str) -> str:
    return _sh([sys.executable, "-m", "tvts", "ablate", str(grid), *args], repo)


def test_an_ablation_grid_runs_as_experiments_resumes_and_summarises(repo, tmp_path):
    """2 variants x 2 seeds (and the start point, which trains nothing): killed after its first
    cell, the grid resumes with the other three; the four are DVC experiments with their
    params; the table's means and spreads are the cells' metrics'; a rerun trains nothing."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(MICRO_GRID)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    # two cells at once, each in its worktree: seed 0's pair, then seed 1's
    first = subprocess.Popen([sys.executable, "-m", "tvts", "ablate", str(grid), "--jobs", "2"],
                             cwd=repo, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    while len(_ledger(repo)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the runner and the cells it had started
    first.wait()
    finished = _ledger(repo)
    assert len(finished) == 2, finished
    resumed = _ablate(repo, grid, "--jobs", "2")
    assert "4 cell(s), 2 done, 2 to run" in resumed
    assert not list((repo / ".dvc/tmp/tvts-exps").iterdir())  # the killed cells' are gone
    cells = _ledger(repo)
    assert len(cells) == 4 and cells[:2] == finished  # the finished ones were not rerun
    assert {(c["variant"], c["seed"]) for c in cells} == {
        (v, s) for v in ("base", "ours") for s in (0, 1)}
    # four DVC experiments, each with its cell's params and metrics
    show = json.loads(_sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo))
    exps = {e["name"]: e["revs"][0]["data"] for c in show for e in c.get("experiments") or []}
    assert {c["experiment"] for c in cells} <= set(exps), exps.keys()
    linear: dict[str, list[float]] = {"base": [], "ours": []}
    for c in sorted(cells, key=lambda c: c["seed"]):
        data = exps[c["experiment"]]
        p = data["params"]["params.yaml"]["data"]
        assert p["pretrain"]["seed"] == c["seed"]
        assert p.get("sort", {}).get("lambda") == (0.0 if c["variant"] == "base" else 2.0)
        value = data["metrics"]["metrics/eval.json"]["data"]["ssv2"]["linear_top1"]["pretrain"]
        assert value == pytest.approx(c["figures"]["pretrain"]["linear"], abs=1e-4)
        linear[c["variant"]].append(value)
    table = (repo / "reports/ablations/micro/index.md").read_text()
    rows = {line.split("|")[1].strip(): [x.strip() for x in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    for variant, label in (("base", "L_base"), ("ours", "TVTS")):
        values = linear[variant]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        assert rows[label][0].replace("**", "") == f"{mean:.1f} ± {std:.1f}", (label, values)
        assert rows[label][2] == ("67.0" if variant == "base" else "68.5")  # the paper's
    # the start point's row is the floor (micro starts from scratch: init is random),
    # each seed's random weights evaluated in every cell of that seed
    floor = [statistics.fmean(c["figures"]["random"]["linear"] for c in cells
                              if c["seed"] == s) for s in (0, 1)]
    shown = f"{statistics.fmean(floor):.1f} ± {statistics.stdev(floor):.1f}"
    assert rows["random weights (floor)"][0] == shown
    assert rows["start point"][0].replace("**", "") == shown
    best = max(("L_base", "TVTS", "start point"), key=lambda r: float(
        rows[r][0].replace("**", "").split(" ")[0]))
    assert rows[best][0].startswith("**")
    assert (repo / "reports/ablations/micro/index.html").exists()
    assert "ablations/micro/index.html" in (repo / "reports/index.html").read_text()
    assert len((repo / "reports/ablations/micro/cells.csv").read_text().splitlines()) > 4
    # a rerun trains nothing: every cell done, no line added
    t0 = time.monotonic()
    again = _ablate(repo, grid)
    assert "4 cell(s), 4 done, 0 to run" in again and "0 cell(s) run" in again
    assert len(_ledger(repo)) == 4 and time.monotonic() - t0 < 60
    # another grid with the same cell (same params, code and data) reuses its experiment
    other = tmp_path / "other.yaml"
    other.write_text(MICRO_GRID.replace("name: micro", "name: other").replace(
        "values: [0, 1]", "values: [1]"))
    reused = _ablate(repo, other)
    assert "the same run as micro-ours-s1" in reused and "0 cell(s) run" in reused


def test_dvc_exp_run_with_a_params_override(repo):
    base = stage_record(repo / "metrics/pretrain.json")
    _sh(["git", "add", "-A"], repo)  # the baseline run, committed as a user would
    _sh(["git", "commit", "-qm", "micro run"], repo)
    _sh([sys.executable, "-m", "dvc", "exp", "run", "-S", "sort.lambda=0.5"], repo)
    show = json.loads(_sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo))
    runs = [exp for commit in show for exp in (commit.get("experiments") or [])]
    assert runs, show
    data = runs[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["sort"]["lambda"] == 0.5
    headline = data["metrics"]["metrics/pretrain.json"]["data"]
    assert headline["steps"] == base["steps"]
    # the headline itself shows the change (before: steps, R@1 100 and chance sort accuracy,
    # identical in both runs): the held-out loss weighs the sort loss less
    assert headline["val_loss"] != base["val_loss"]
    assert base["val_videos"] >= 2 and base["val_r1_chance"] < 100
    # the sort loss weighs less in the recorded training loss (the run's full record, left in
    # the workspace): other metrics were recorded
    pre = stage_record(repo / "metrics/pretrain.json")
    assert pre["train_loss"] != base["train_loss"]
    assert pre["train_loss"] == pytest.approx(
        pre["train_loss_contrastive"] + 0.5 * pre["train_loss_sort"], rel=1e-3)
    # two experiments side by side: what changed fits a terminal
    changed = _sh([sys.executable, "-m", "dvc", "exp", "show", "--only-changed", "--csv"], repo)
    head = changed.splitlines()[0].split(",")
    shown = [c for c in head if c not in {"rev", "typ", "parent", "State", "Executor"}]
    assert "sort.lambda" in shown and len(shown) <= 20, shown


def test_dvc_repro_launches_pretraining_in_two_processes_from_params(repo):
    """launch.nproc_per_node = 2 on the CPU: `dvc repro` runs the stage's command, which
    starts two gloo processes itself; the run is DVC's like any other (dvc.lock records it)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["launch"] = {"nproc_per_node": 2}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh([sys.executable, "-m", "dvc", "repro", "-f", "--single-item", "pretrain"], repo)
    assert stage_record(repo / "metrics/pretrain.json")["processes"] == 2
    status = _sh([sys.executable, "-m", "dvc", "status", "pretrain", "--json"], repo)
    assert "pretrain" not in json.loads(status or "{}")  # dvc.lock matches the launched run
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["pretrain"]
    md5 = next(o["md5"] for o in lock["outs"] if o["path"] == "metrics/details/pretrain.json")
    assert md5  # the details the two processes' rank 0 wrote, recorded
