"""Headless Chromium for page tests (Debian's chromium; `.ci/run` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI requires it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
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
