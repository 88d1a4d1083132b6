"""What a user sees: the Dagster UI served by ``dagster dev`` shows the lineage from raw_images
to evaluation_report, and the MLflow UI shows a registered version with its variant, snapshot
and champion alias. Headless Debian chromium driven by Playwright; screenshots are kept under
the test's temporary folder (``--basetemp`` to keep them somewhere known)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LINEAGE = ("raw_images", "filtered_pool", "annotation_iteration", "annotated_pool", "cosmicman_hq_snapshot",
           "plain_finetune_checkpoint", "daring_checkpoint", "adversarial_checkpoint", "evaluation_report")


def _serve(cmd: list[str], port: int, log: Path, env: dict, timeout: float = 120) -> subprocess.Popen:
    # its own process group: `dagster dev` leaves its webserver and daemon running when only it is terminated
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"{cmd[0]} exited: {log.read_text()[-2000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    pytest.fail(f"{cmd[0]} did not listen on {port} within {timeout:.0f} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and every process it started (its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children still shutting down after the parent left
    except ProcessLookupError:
        pass
    proc.wait()


def shown_as(name: str, label: str) -> bool:
    """The graph shortens long names to ``head…tail``."""
    if "…" not in label:
        return label == name
    head, tail = label.split("…", 1)
    return name.startswith(head) and name.endswith(tail)


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield browser.new_page(viewport={"width": 1600, "height": 1000})
        browser.close()


@pytest.mark.slow
def test_dagster_ui_shows_the_lineage_from_raw_images_to_the_report(tmp_path, browser_page):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "infra" / "dagster" / "dagster.yaml").read_text())
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "COSMICMAN_PROFILE": "test", "COSMICMAN_WORKSPACE": str(tmp_path / "ws")}
    proc = _serve([str(BIN / "dagster"), "dev", "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)],
                  port, tmp_path / "dagster-dev.log", env)
    page = browser_page
    try:
        page.goto(f"http://127.0.0.1:{port}/assets/evaluation_report?view=lineage&lineageScope=upstream&lineageDepth=10",
                  timeout=120_000)
        skip = page.get_by_role("button", name="Skip")  # the first visit's community dialog
        try:
            skip.click(timeout=10_000)
        except Exception:  # noqa: BLE001 - not shown: nothing to dismiss
            pass
        page.wait_for_selector("[class*=AssetNode_assetName]", timeout=120_000)
        page.wait_for_function(f"document.querySelectorAll('[class*=AssetNode_assetName]').length >= {len(LINEAGE)}",
                               timeout=60_000)
        labels = [t.strip() for t in page.locator("[class*=AssetNode_assetName]").all_inner_texts()]
        page.screenshot(path=str(tmp_path / "dagster-lineage.png"))
    finally:
        _stop(proc)
    missing = [a for a in LINEAGE if not any(shown_as(a, label) for label in labels)]
    assert not missing, f"lineage of evaluation_report lacks {missing}; nodes shown: {labels}"
    assert (tmp_path / "dagster-lineage.png").stat().st_size > 10_000


@pytest.mark.slow
def test_mlflow_ui_shows_a_model_version_with_its_variant_and_alias(tmp_path, browser_page):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("cosmicman-training")

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [b""] * len(model_input)

    from training.mlflow_model import log_and_register

    with mlflow.start_run(run_name="daring"):
        version, model_id = log_and_register(Echo(), {}, "cosmicman", "daring", {"snapshot.tag": "cosmicman-hq-v1"})
    mlflow.MlflowClient().set_registered_model_alias("cosmicman", "champion", version)
    port = free_port()
    proc = _serve([str(BIN / "mlflow"), "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1"], port, tmp_path / "mlflow-server.log", dict(os.environ))
    page = browser_page
    try:
        page.goto(f"http://127.0.0.1:{port}/#/models/cosmicman/versions/{version}", timeout=120_000)
        page.get_by_text("cosmicman-hq-v1").first.wait_for(timeout=120_000)
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "mlflow-model-version.png"), full_page=True)
    finally:
        _stop(proc)
    assert f"Version {version}" in text and "champion" in text
    assert "variant" in text and "daring" in text and model_id in text
