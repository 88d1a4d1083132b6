"""Training as two processes: the README's `accelerate launch` command on CPU (gloo over loopback).

One MLflow run and one registered version come out of it (the main process tracks and registers),
the two processes really formed a world of two and ended with the same weights, and that is what
was saved."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.conftest import BIN, ROOT

# the README's row, word for word, with the CPU config in place of the GPU one
COMMAND = ["accelerate", "launch", "--config_file", "infra/accelerate/multi_cpu.yaml", "-m", "flywheel.cli", "train",
           "--name", "daring"]


def _publish(settings, protocol, count: int = 16) -> None:
    """A small CosmicMan-HQ v1 in the workspace's registry (synthetic renders with their ground truth)."""
    from flywheel.snapshot.publish import publish_snapshot
    from flywheel.stages import snapshot_registry
    from flywheel.store import ContentStore
    from tests.training_samples import snapshot_rows

    store = ContentStore(settings.store_url)
    rows = snapshot_rows(protocol, store, range(count), width=64, height=96)
    publish_snapshot(rows, store.get, snapshot_registry(settings), protocol, settings.snapshot, {"run": "test"},
                     settings.data_docs_dir)


@pytest.mark.slow
def test_two_processes_train_once_track_once_and_agree_on_the_weights(workspace, protocol, tmp_path, monkeypatch):
    import mlflow

    from flywheel.settings import load_settings
    from training.base_model import create_tiny_base
    from training.lora import load_trained
    from training.trainer import weights_digest

    base = create_tiny_base(tmp_path / "base", protocol)
    monkeypatch.setenv("COSMICMAN_TRAINING__BASE_MODEL_DIR", str(base))
    settings = load_settings()
    _publish(settings, protocol)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    proc = subprocess.run(COMMAND, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"{' '.join(COMMAND)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    out = settings.workspace / "training" / "daring" / "cosmicman-hq-v1"
    ranks = [json.loads((out / "processes" / f"rank-{i}.json").read_text()) for i in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert ranks[0]["unet_sha256"] == ranks[1]["unet_sha256"]
    assert not (out / "processes" / "rank-2.json").exists()
    saved = load_trained(out / "final").unet
    assert weights_digest(saved) == ranks[0]["unet_sha256"]  # what was saved is what both processes hold

    mlflow.set_tracking_uri(settings.tracking.tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(f"{settings.tracking.experiment_prefix}-training")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.data.params["processes"] == "2" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_noise")] == [1, 2]  # logged once, not per process
    versions = client.search_model_versions(f"name='{settings.training.registered_model}'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    print(f"{' '.join(COMMAND)}: {seconds:.0f} s")
