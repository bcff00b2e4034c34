"""What every bench writes beside its figures: the machine they come from, and the JSON file
(one place, so results read alike). Bench scripts run as `python bench/<name>.py`, which puts
this folder on the import path."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")  # Linux; elsewhere the platform's own name
    lines = info.read_text().splitlines() if info.exists() else []
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor() or "CPU")
    return f"{name} ({os.cpu_count()} cores)"


def machine(**extra: Any) -> dict[str, Any]:
    """The CPU, core count, Python and torch versions, the GPU when one is visible."""
    out: dict[str, Any] = {"cpu": cpu_name(), "cpus": os.cpu_count(),
                           "python": platform.python_version()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return out | extra


def write_results(path: str | Path, result: Any) -> Path:
    """`result` as indented JSON at `path` (folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
