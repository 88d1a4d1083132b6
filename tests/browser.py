"""Headless Chromium for page tests (Debian's chromium; `make test` installs it with `make browser`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # `make test` installs it first (`make browser`); running pytest alone needs it too
        pytest.fail("chromium is not installed: run `make browser` (Debian's chromium package)")
    return path


def render(page: Path, screenshot: Path, size: tuple[int, int] = (1400, 2400)) -> str:
    """Screenshot of a local page, and its DOM after load (as the browser parsed it)."""
    with tempfile.TemporaryDirectory() as profile:
        common = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        subprocess.run([*common, f"--screenshot={screenshot}", page.resolve().as_uri()], check=True, capture_output=True,
                       timeout=120)
        dom = subprocess.run([*common, "--dump-dom", page.resolve().as_uri()], check=True, capture_output=True, text=True,
                             timeout=120)
    return dom.stdout
