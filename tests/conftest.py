import os
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


def wait_healthy(proc: subprocess.Popen, health_url: str, seconds: float, failure: str) -> None:
    """Wait until ``health_url`` answers 200; fail the test with ``failure`` if the server exits or times out."""
    import urllib.request

    deadline = time.time() + seconds
    while True:
        try:
            if urllib.request.urlopen(health_url, timeout=2).status == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(failure)
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


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


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:  # `make test` installs it (`make postgres`)
        pytest.fail("PostgreSQL server not installed (no /usr/lib/postgresql/*/bin/initdb): run `make postgres`")
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on loopback, in a fresh data folder; yields ``(host, port, user)``.

    It runs as the ``postgres`` user when the tests run as root (the server refuses root),
    trusts loopback connections, and is stopped and deleted afterwards.
    """
    import getpass
    import shutil
    import tempfile

    bindir, port = _postgres_bin(), free_port()
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    as_postgres = os.geteuid() == 0
    if as_postgres:
        root.chmod(0o755)
        shutil.chown(root, "postgres", "postgres")
    user = "postgres" if as_postgres else getpass.getuser()
    run_as = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    data = root / "data"

    def pg(*args, **kw):
        return subprocess.run([*run_as, *args], check=True, capture_output=True, text=True, **kw)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start",
       "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    yield "127.0.0.1", port, user
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def create_database(server, name: str) -> str:
    """A new database on ``postgres_server``; returns its SQLAlchemy URL (psycopg2 driver)."""
    import psycopg2

    host, port, user = server
    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql+psycopg2://{user}@{host}:{port}/{name}"


@pytest.fixture(scope="session")
def small_pool(protocol):
    """90 clean synthetic samples as an annotation pool (views at 32 px, ground truth)."""
    import cv2
    import numpy as np

    from flywheel.annotation.crops import Views
    from flywheel.annotation.iterations import Pool
    from flywheel.synthetic.source import SyntheticConfig, render_sample

    cfg = SyntheticConfig(seed=9, bad_fraction=0.0, width=128, height=192)
    ids, pairs, truth, data = [], [], {}, {}
    for i in range(90):
        s = render_sample(cfg, protocol, i)
        ids.append(s.item)
        data[s.item] = s.data
        pairs.append((cv2.cvtColor(cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), s.parsing))
        truth[s.item] = s.truth["attributes"]
    pool = Pool(ids, Views.of(pairs, protocol, size=32), truth)
    pool.image_data = data  # the encoded images, for labelling tools that show them
    return pool


@pytest.fixture(scope="session")
def label_studio():
    """A real Label Studio server on loopback, from its own environment (`make env` installs it)."""
    exe = ROOT / ".tools" / "label-studio" / "bin" / "label-studio"
    if not exe.exists():  # the README's test command (make test) always installs it
        pytest.fail(f"Label Studio server not installed at {exe}: run `make env`")
    import tempfile

    port, token = free_port(), "c0ffee" * 6 + "c0ff"
    data = tempfile.mkdtemp(prefix="label-studio-")
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": data}
    log = open(os.path.join(data, "server.log"), "w")
    proc = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port),
                             "--data-dir", data, "--username", "annotator@example.com", "--password", "not-a-secret-123",
                             "--user-token", token, "--enable-legacy-api-token"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, f"{url}/health", 180, f"Label Studio did not start; see {data}/server.log")
    yield url, token
    stop_server(proc)
    log.close()
