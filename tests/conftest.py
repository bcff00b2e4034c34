"""Shared fixtures: small real media files and a micro demo corpus generated once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tvts.config import Params, resolve
from tvts.corpus.demo.generate import DemoOutput, generate_demo
from tvts.corpus.demo.media import write_video
from tvts.stages.common import details_path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An end-to-end test is a slow one: the fast lane (`-m 'not slow'`) leaves both out."""
    for item in items:
        if item.get_closest_marker("integration") is not None:
            item.add_marker(pytest.mark.slow)


def micro(overrides: dict | None = None) -> Params:
    """The micro profile with `overrides` (sections as params.yaml spells them)."""
    return resolve({"profile": "micro", **(overrides or {})})


# what a scratch copy of the project needs besides its code folders
PROJECT_FILES = ("dvc.yaml", ".gitignore", ".dvcignore")


def scratch_project(root: Path, folders: tuple[str, ...] = ("tvts",),
                    params: dict | None = None, files: tuple[str, ...] = PROJECT_FILES
                    ) -> Path:
    """A copy of the project under `root`: its code `folders` (byte-code caches left out),
    `files`, and params.yaml on the micro profile, top-level sections of `params` replacing
    the workspace's."""
    for folder in folders:
        shutil.copytree(REPO / folder, root / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in files:
        shutil.copy(REPO / name, root / name)
    values = yaml.safe_load((REPO / "params.yaml").read_text()) | {"profile": "micro"}
    (root / "params.yaml").write_text(yaml.safe_dump(values | (params or {}), sort_keys=False))
    return root


def stage_record(metrics_path: str | Path) -> dict:
    """Everything a stage recorded: the details file beside its headline metrics."""
    return json.loads(details_path(metrics_path).read_text())


def free_port() -> int:
    """A TCP port nothing listens on (for local servers and process groups in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_video(path: Path, seconds: float = 2.0, fps: int = 8, size: tuple[int, int] = (64, 48),
               audio: bool = True, seed: int = 0, faststart: bool = False) -> Path:
    """A real H.264 (+AAC) file with moving content, so every frame differs."""
    rng = np.random.default_rng(seed)
    w, h = size
    n = int(seconds * fps)
    base = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 3 * i, axis=1) for i in range(n)])
    sr = 22050
    tone = None
    if audio:
        t = np.arange(int(seconds * sr)) / sr
        tone = (3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    write_video(path, frames, fps, audio=tone, sample_rate=sr, faststart=faststart)
    return path


@pytest.fixture(scope="session")
def micro_params():
    return micro()


@pytest.fixture(scope="session")
def micro_demo(tmp_path_factory, micro_params) -> DemoOutput:
    root = tmp_path_factory.mktemp("demo")
    return generate_demo(micro_params.corpus.demo, 0, root, workers=1)


@pytest.fixture(scope="session")
def micro_corpus_stage(tmp_path_factory, micro_params) -> Path:
    """The corpus stage's outputs on the micro profile, made once: `<root>/corpus` (the
    videos table, the demo's media and downstream sets); read it, write elsewhere."""
    from tvts.stages import corpus as corpus_stage

    root = tmp_path_factory.mktemp("micro-corpus")
    corpus_stage.run(micro_params, root / "corpus", root / "corpus.json")
    return root


# ---------------------------------------------------------------- S3 (a real local endpoint)
@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    exe = shutil.which("moto_server") or sys.executable
    cmd = [exe, "-p", str(port)] if exe != sys.executable else [
        sys.executable, "-m", "moto.server", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
