"""The sources stage: DVC reruns the corpus and downstream stages exactly when a directory
they read changed, without hashing its videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvts.config import resolve
from tvts.corpus.listing import corpus_listing, directory_listing, downstream_listing
from tvts.tables import read_table

from .conftest import make_video, scratch_project


def test_listing_changes_with_the_files_and_only_with_them(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    make_video(src / "a" / "x.mp4", seed=1)
    first = directory_listing(src)
    assert first["files"] == 1 and first == directory_listing(src)
    make_video(src / "a" / "y.mp4", seed=2)
    added = directory_listing(src)
    assert added["files"] == 2 and added["digest"] != first["digest"]
    (src / "a" / "y.mp4").write_bytes((src / "a" / "y.mp4").read_bytes()[:-10])
    assert directory_listing(src)["digest"] != added["digest"]  # changed in place
    os.utime(src / "a" / "x.mp4", ns=(1, 1))  # rewritten with the same size
    touched = directory_listing(src)
    (src / "b.mp4").symlink_to(tmp_path / "nowhere.mp4")
    linked = directory_listing(src)
    assert linked["broken"] == 1 and linked["digest"] != touched["digest"]
    assert directory_listing(tmp_path / "gone") == {"directory": str(tmp_path / "gone"),
                                                     "missing": True}
    params = resolve({"corpus": {"source": f"yt_temporal:{src}"},
                      "downstream": {"sets": {"mine": str(src), "ssv2": "demo"}}})
    assert corpus_listing(params.corpus)["digest"] == linked["digest"]
    listed = downstream_listing(params.downstream, params.svo_source())
    assert listed == {"mine": {"root": linked}, "ssv2": {"demo": "ssv2"}}


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert done.returncode == 0, f"dvc {args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.integration
def test_dvc_reruns_corpus_and_downstream_when_their_directories_change(tmp_path):
    root, videos, clips = tmp_path / "proj", tmp_path / "videos", tmp_path / "clips"
    root.mkdir()
    scratch_project(root, params={"corpus": {"source": str(videos), "workers": 1},
                                  "downstream": {"sets": {"mine": str(clips)}, "workers": 1,
                                                 "svo": None}}, files=("dvc.yaml",))
    videos.mkdir()
    (clips / "jump").mkdir(parents=True)
    make_video(videos / "a.mp4", seconds=3.0, seed=1)
    make_video(clips / "jump" / "c1.mp4", seed=3)
    _dvc(root, "init", "--no-scm", "-q")

    def counts() -> tuple[int, int]:
        return (read_table(root / "data/corpus/videos.parquet", "videos").height,
                read_table(root / "data/downstream/mine.parquet", "downstream").height)

    _dvc(root, "repro", "downstream")
    assert counts() == (1, 1)
    again = _dvc(root, "repro", "downstream")
    assert "'corpus' didn't change" in again and "'downstream' didn't change" in again
    (videos / "nested").mkdir()
    make_video(videos / "nested" / "b.mp4", seconds=3.0, seed=2)
    make_video(clips / "jump" / "c2.mp4", seed=4)
    out = _dvc(root, "repro", "downstream")
    assert "Running stage 'corpus'" in out and "Running stage 'downstream'" in out
    assert counts() == (2, 2)
    listing = json.loads((root / "data/sources/corpus.json").read_text())
    assert listing["files"] == 2 and listing["source"] == "dir"
