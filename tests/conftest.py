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

from tvts.config import resolve
from tvts.corpus.demo.generate import DemoOutput, generate_demo
from tvts.corpus.demo.media import write_video
from tvts.stages.common import details_path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


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
    return resolve({"profile": "micro"})


@pytest.fixture(scope="session")
def micro_demo(tmp_path_factory, micro_params) -> DemoOutput:
    root = tmp_path_factory.mktemp("demo")
    return generate_demo(micro_params.corpus.demo, 0, root, workers=1)


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
