"""The production storage, really run: Dagster on PostgreSQL with the production storage block,
and an MLflow tracking server with a PostgreSQL backend store and an S3 artifact store (moto's
server on loopback stands in for S3/MinIO)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, create_database, free_port, stop_server, wait_healthy

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.server]


def _pg_rows(url: str, sql: str, *args) -> list[tuple]:
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_dagster_materializes_the_demo_chain_on_postgres(workspace, postgres_server, tmp_path, monkeypatch):
    import dagster as dg

    from flywheel.manifests import FILTERED_POOL, read_manifest
    from flywheel.settings import load_settings

    host, port, user = postgres_server
    url = create_database(postgres_server, "dagster")
    home = tmp_path / "dagster_home"
    home.mkdir()
    production = yaml.safe_load((ROOT / "infra" / "dagster" / "dagster.production.yaml").read_text())
    # the production storage block as it is; runs launch locally (no cluster here)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}, "storage": production["storage"]}))
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": host, "DAGSTER_PG_PORT": str(port),
           "DAGSTER_PG_USER": user, "DAGSTER_PG_PASSWORD": "unused-trust-auth", "DAGSTER_PG_DB": "dagster",
           "COSMICMAN_SYNTHETIC__COUNT": "16", "COSMICMAN_FILTER__WORKERS": "2"}
    key = "synthetic--20260101T000000Z"

    def dagster(*args):
        proc = subprocess.run([str(BIN / "dagster"), *args], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    dagster("instance", "migrate")  # what a deployment runs once against a new database
    for k in (k for k in env if k.startswith("DAGSTER_PG_")):
        monkeypatch.setenv(k, env[k])
    inst = dg.DagsterInstance.from_config(str(home))
    inst.add_dynamic_partitions("source_batches", [key])  # as the schedule adds it
    dagster("asset", "materialize", "-m", "orchestration.definitions", "--select", "key:raw_images", "--partition", key)
    dagster("asset", "materialize", "-m", "orchestration.definitions", "--select", "key:filtered_pool")

    assert "PostgresEventLogStorage" in type(inst.event_log_storage).__name__
    pool = read_manifest(load_settings().manifests_dir / "filtered_pool.parquet", FILTERED_POOL)
    event = inst.get_latest_materialization_event(dg.AssetKey("filtered_pool"))
    assert event.asset_materialization.metadata["dagster/row_count"].value == pool.num_rows
    # the records are in PostgreSQL itself: two successful runs, both materializations, the pool's check
    runs = _pg_rows(url, "SELECT status FROM runs")
    assert sorted(r[0] for r in runs) == ["SUCCESS", "SUCCESS"]
    kinds = dict(_pg_rows(url, "SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                               "GROUP BY asset_key"))
    assert kinds == {'["raw_images"]': 1, '["filtered_pool"]': 1}
    checks = _pg_rows(url, "SELECT check_name, execution_status FROM asset_check_executions")
    assert ("filtered_pool_suite", "SUCCEEDED") in checks


@pytest.fixture
def mlflow_server(postgres_server, s3_server, tmp_path):
    """``mlflow server`` with its backend store in PostgreSQL and its artifacts in an S3 bucket."""
    import boto3

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="mlflow-artifacts")
    db = create_database(postgres_server, "mlflow")
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", db, "--artifacts-destination", "s3://mlflow-artifacts"],
                            env={**os.environ, **creds, "MLFLOW_S3_ENDPOINT_URL": s3_server}, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, f"{url}/health", 120, f"mlflow server did not start; see {tmp_path}/mlflow-server.log")
    yield url, db, s3
    stop_server(proc)
    log.close()


@pytest.mark.slow
def test_mlflow_server_keeps_params_in_postgres_and_artifacts_in_s3(workspace, mlflow_server, monkeypatch, tmp_path):
    import mlflow

    from flywheel.settings import load_settings
    from flywheel.tracking import flatten, mlflow_run

    url, db, s3 = mlflow_server
    monkeypatch.setenv("COSMICMAN_TRACKING__TRACKING_URI", url)
    settings = load_settings()
    assert settings.tracking.artifact_root is None  # the server decides where artifacts go
    note = tmp_path / "note.txt"
    note.write_text("logged through the tracking server\n")
    with mlflow_run(settings.tracking, "cosmicman-production-check", "storage-check") as run:
        mlflow.log_params(flatten({"filter": settings.filter.model_dump(mode="json")}))
        mlflow.log_metric("kept", 12)
        mlflow.log_artifact(str(note), artifact_path="notes")
    run_id = run.info.run_id

    params = dict(_pg_rows(db, "SELECT key, value FROM params WHERE run_uuid = %s", run_id))
    assert params["filter.min_face"] == str(settings.filter.min_face) and len(params) == len(
        flatten({"filter": settings.filter.model_dump(mode="json")}))
    assert _pg_rows(db, "SELECT value FROM metrics WHERE run_uuid = %s AND key = 'kept'", run_id) == [(12.0,)]
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert [k for k in objects if k.endswith(f"{run_id}/artifacts/notes/note.txt")], objects
    body = s3.get_object(Bucket="mlflow-artifacts", Key=next(k for k in objects if k.endswith("note.txt")))["Body"].read()
    assert body == note.read_bytes()
    assert not (settings.workspace / "mlartifacts").exists() and not (settings.workspace / "mlflow.db").exists()
