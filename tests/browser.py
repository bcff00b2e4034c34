"""Headless Chromium for the report tests, with the network blocked: every host name resolves
to nothing, so a page that needs a CDN shows it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--mute-audio",
                "--allow-file-access-from-files", "--host-resolver-rules=MAP * ~NOTFOUND"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("TVTS_REQUIRE_CHROMIUM"):
        pytest.fail("Chromium is required here (TVTS_REQUIRE_CHROMIUM) but not on PATH")
    pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")


def dump_dom(page: Path, budget_ms: int = 8000, query: str = "") -> str:
    """The page's DOM after its scripts ran (virtual time, so timers settle quickly); `query`
    is appended to its URL (`?q=...`)."""
    done = subprocess.run([chromium(), *CHROME_FLAGS, f"--virtual-time-budget={budget_ms}",
                           "--dump-dom", page.resolve().as_uri() + query],
                          check=True, capture_output=True, text=True, timeout=180)
    return done.stdout


def screenshot(page: Path, out: Path, size: str = "1400,900",
               budget_ms: int = 8000) -> np.ndarray:
    """An RGB screenshot of the rendered page."""
    subprocess.run([chromium(), *CHROME_FLAGS, f"--screenshot={out}", f"--window-size={size}",
                    f"--virtual-time-budget={budget_ms}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=180)
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def ink(img: np.ndarray) -> float:
    """Share of pixels that are not the page's white: ~0 for a blank page."""
    return float((np.abs(img - 255).sum(axis=2) > 60).mean())


_REMOTE = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//"
                     r"|<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//"
                     r"|@import\s+(?:url\()?\s*[\"']?(?:https?:)?//"
                     r"|url\(\s*[\"']?(?:https?:)?//", re.I)


def remote_references(html: str) -> list[str]:
    """Scripts, stylesheets, CSS imports and CSS images a page would fetch from the network."""
    return [html[m.start():m.start() + 120] for m in _REMOTE.finditer(html)]
