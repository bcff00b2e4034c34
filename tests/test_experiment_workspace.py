"""The Prefect flow's experiment workspace (an override run): the workspace's code, committed
or not, runs there; persisted outputs are hard-linked, not copied; an ASR journal appended to
there becomes the experiment's own file and leaves the workspace's as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from flows.pipeline import experiment_workspace
from tvts.asr.journal import ShardJournal

DVC_YAML = {"stages": {"asr": {"cmd": "true", "outs": [
    {"data/asr/shards": {"persist": True, "cache": False}},
    {"reports/asr.html": {"cache": False}}]}}}


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def test_an_experiment_runs_the_workspace_code_on_linked_outputs(tmp_path):
    root = tmp_path / "project"
    (root / "tvts").mkdir(parents=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (root / "params.yaml").write_text("seed: 0\n")
    (root / "tvts" / "code.py").write_text("VALUE = 1\n")
    (root / ".gitignore").write_text("/data/\n/reports/\n")
    _git(root, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    # the user's uncommitted edit and a new file
    (root / "tvts" / "code.py").write_text("VALUE = 2\n")
    (root / "tvts" / "new.py").write_text("NEW = True\n")
    journal = ShardJournal(root / "data/asr/shards", 1, "fp")
    journal.append({"video_id": "v1", "words": 3})
    (root / "data/asr/shards/shard-00000.lock").write_text("pid 1\n")
    (root / "reports").mkdir()
    (root / "reports/asr.html").write_text("<p>report</p>")
    workspace_journal = root / "data/asr/shards" / "shard-00000.jsonl"
    before = workspace_journal.read_bytes()
    said: list[str] = []
    with experiment_workspace(root, {"seed": 1}, said.append) as work:
        assert (work / "tvts/code.py").read_text() == "VALUE = 2\n"
        assert (work / "tvts/new.py").read_text() == "NEW = True\n"
        assert yaml.safe_load((work / "params.yaml").read_text()) == {"seed": 1}
        linked = work / "data/asr/shards" / workspace_journal.name
        assert linked.stat().st_ino == workspace_journal.stat().st_ino  # no copy
        lock = work / "data/asr/shards/shard-00000.lock"  # each run writes its own
        assert lock.read_text() == "pid 1\n" and lock.stat().st_ino != (
            root / "data/asr/shards/shard-00000.lock").stat().st_ino
        assert (work / "reports/asr.html").stat().st_ino != (
            root / "reports/asr.html").stat().st_ino  # not persisted: a copy
        # the experiment's ASR appends: its own journal, the workspace's untouched
        ShardJournal(work / "data/asr/shards", 1, "fp").append({"video_id": "v2", "words": 1})
        assert set(ShardJournal(work / "data/asr/shards", 1, "fp").load()) == {"v1", "v2"}
        assert workspace_journal.read_bytes() == before
    assert "(2 uncommitted or untracked file(s)), 1 output file(s) linked, 2 copied" in said[0]
    assert not list((root / ".dvc/tmp/tvts-exps").iterdir())  # the worktree is gone
