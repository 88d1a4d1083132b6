"""The Dagster code location: selection parsing (antlr runtime intact) and a real CLI run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from flywheel.manifests import RAW_RECORDS, read_manifest
from flywheel.settings import load_settings
from orchestration.definitions import defs

BIN = Path(sys.executable).parent


def test_asset_selection_strings_parse():
    # Dagster's selection grammar runs on the antlr4 4.13 runtime; DVC's hydra pins 4.9
    # (upstream dagster issue 27487), which is why DVC lives in its own environment.
    graph = defs.resolve_asset_graph()
    sel = dg.AssetSelection.from_string('key:raw_images or group:sourcing')
    assert sel.resolve(graph) == {dg.AssetKey("raw_images")}
    assert dg.AssetSelection.from_string("group:nonexistent").resolve(graph, allow_missing=True) == set()


def test_definitions_load_with_resources_and_jobs():
    assert defs.resolve_job_def("flywheel_refresh") is not None
    assert "flywheel" in defs.resources


@pytest.mark.slow
def test_raw_images_materializes_from_the_dagster_cli(workspace, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "COSMICMAN_SYNTHETIC__COUNT": "24"}
    proc = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions", "--select", "key:raw_images"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    settings = load_settings()
    table = read_manifest(settings.manifests_dir / "raw" / "synthetic" / "batch-000000.parquet", RAW_RECORDS)
    assert table.num_rows == 24
    assert all(s == "ok" for s in table.column("status").to_pylist())

    # the run and its metadata are in the real Dagster instance
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_images"))
        meta = event.asset_materialization.metadata
        assert meta["records"].value == 24
        assert meta["preview"].value.startswith("![raw images](data:image/png;base64,")
        assert "| defect | records |" in meta["ground_truth_defects"].value
