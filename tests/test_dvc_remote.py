"""A DVC remote on S3 (dvc-s3) against a real local S3 endpoint (moto's server): pipeline
outputs pushed and pulled back, the endpoint in the committed config, the credentials only in
the environment and never in anything a run writes or prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import scratch_project

pytestmark = pytest.mark.integration
SECRET = "tvtsCanarySecret0123456789abcdefXYZ"  # must never show up anywhere


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{cmd} failed:\n{out}"
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_push_and_pull_pipeline_outputs_through_s3(s3_endpoint, tmp_path):
    import boto3

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "tvts-test-key", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="tvts-test-key",
                 aws_secret_access_key=SECRET, region_name="us-east-1"
                 ).create_bucket(Bucket="team-dvc")
    root = tmp_path / "project"
    root.mkdir()
    scratch_project(root)
    dvc = [sys.executable, "-m", "dvc"]
    printed = []
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"],
                # the README's commands: endpoint in the committed config, no credentials
                [*dvc, "remote", "add", "-d", "team", "s3://team-dvc/tvts"],
                [*dvc, "remote", "modify", "team", "endpointurl", s3_endpoint],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"],
                [*dvc, "repro", "corpus"], [*dvc, "push"]):
        printed.append(_sh(cmd, root, env))
    before = _files(root / "data" / "corpus")
    keys = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="tvts-test-key",
                        aws_secret_access_key=SECRET, region_name="us-east-1"
                        ).list_objects_v2(Bucket="team-dvc", Prefix="tvts/")
    assert keys.get("KeyCount", 0) > 0

    # a fresh clone's view: no cache, no outputs; pull brings them back byte for byte
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / "data")
    printed.append(_sh([*dvc, "pull", "corpus"], root, env))
    assert _files(root / "data" / "corpus") == before
    printed.append(_sh([*dvc, "status", "-c", "corpus"], root, env))

    # without credentials the remote refuses, and the error names no secret
    no_creds = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    no_creds |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                 "AWS_CONFIG_FILE": str(tmp_path / "none")}
    shutil.rmtree(root / ".dvc" / "cache")
    failed = subprocess.run([*dvc, "pull", "corpus"], cwd=root, env=no_creds, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode != 0 and "Unable to locate credentials" in failed.stderr
    printed.append(failed.stdout + failed.stderr)

    # the secret is in no output, no committed config, nothing the run wrote
    assert not any(SECRET in out for out in printed)
    written = [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts
               and p.stat().st_size < 5_000_000]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert "endpointurl" in (root / ".dvc" / "config").read_text()
