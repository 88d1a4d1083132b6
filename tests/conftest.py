import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace for the `test` profile; settings read it from the environment."""
    ws = tmp_path / "workspace"
    monkeypatch.setenv("COSMICMAN_PROFILE", "test")
    monkeypatch.setenv("COSMICMAN_WORKSPACE", str(ws))
    return ws


@pytest.fixture(scope="session")
def protocol():
    from flywheel.protocol import load_protocol

    return load_protocol()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's standalone server) on loopback."""
    port = free_port()
    exe = BIN / "moto_server"
    if not exe.exists():
        pytest.fail(f"moto_server not installed in {BIN}: run `make env`")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(10)
