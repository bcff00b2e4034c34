"""A fine-tuning run's folder and key, shared by the classification and retrieval protocols
(kept apart from either, so each one's code digest covers only its own code)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from tvts.storage import atomic_write_text
from tvts.train.distributed import Dist


def claim_run_dir(out_dir: Path, fingerprint: str, d: Dist) -> None:
    """Make `out_dir` this run's: the checkpoints and logs of a run with another fingerprint
    (killed before it finished, then the weights or the recipe changed) are removed, so the
    trainer resumes only a run of the same fingerprint. The main process decides; the others
    wait for it before they look for a checkpoint."""
    if d.main:
        _claim(out_dir, fingerprint)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _claim(out_dir: Path, fingerprint: str) -> None:
    marker = out_dir / "run.json"
    try:
        same = json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        same = False
    if not same:
        for stale in ("checkpoints", "dvclive"):
            shutil.rmtree(out_dir / stale, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps({"fingerprint": fingerprint}) + "\n")


def run_fingerprint(*parts: Any) -> str:
    """A hash of the JSON of `parts` (settings, item lists, weight fingerprints)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
