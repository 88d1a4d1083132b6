"""The Dagster code location: selection parsing (antlr runtime intact), a real CLI run, the
blocking check, and the refresh schedule and sensor against a real instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import parse_batch_key, source_batches
from flywheel.manifests import FILTERED_POOL, RAW_RECORDS, read_manifest
from flywheel.settings import load_settings
from orchestration.definitions import defs

BIN = Path(sys.executable).parent


def test_asset_selection_strings_parse():
    # Dagster's selection grammar runs on the antlr4 4.13 runtime; DVC's hydra pins 4.9
    # (upstream dagster issue 27487), which is why DVC lives in its own environment.
    graph = defs.resolve_asset_graph()
    sel = dg.AssetSelection.from_string('key:raw_images or group:filtering')
    assert sel.resolve(graph) == {dg.AssetKey("raw_images"), dg.AssetKey("filtered_pool")}
    assert dg.AssetSelection.from_string("group:nonexistent").resolve(graph, allow_missing=True) == set()


def test_definitions_assemble():
    assert defs.resolve_job_def("source_refresh") is not None
    assert defs.resolve_schedule_def("weekly_source_refresh").cron_schedule == "0 3 * * 1"
    assert defs.resolve_sensor_def("pool_below_lower_bound") is not None
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {"filtered_pool_suite", "annotations_suite", "cosmicman_hq_snapshot_suite"} <= checks
    assert {"daring_checkpoint", "plain_finetune_checkpoint", "adversarial_checkpoint"} <= {k.path[-1] for k in defs.resolve_asset_graph().get_all_asset_keys()}
    graph = defs.resolve_asset_graph()
    assert dg.AssetSelection.from_string("group:annotation").resolve(graph) == {
        dg.AssetKey("annotation_iteration"), dg.AssetKey("annotated_pool")}
    upstream = dg.AssetSelection.from_string("+key:annotated_pool").resolve(graph)
    assert {dg.AssetKey("raw_images"), dg.AssetKey("filtered_pool"), dg.AssetKey("annotation_iteration")} <= upstream


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst, home


@pytest.mark.slow
def test_refresh_materializes_from_the_dagster_cli(workspace, instance):
    inst, home = instance
    key = "synthetic--20260101T000000Z"
    inst.add_dynamic_partitions(source_batches.name, [key])
    env = {**os.environ, "DAGSTER_HOME": str(home), "COSMICMAN_SYNTHETIC__COUNT": "16",
           "COSMICMAN_FILTER__WORKERS": "2"}  # process pools inside a Dagster step (forked workers deadlocked there)
    for selection, extra in (("key:raw_images", ["--partition", key]), ("key:filtered_pool", [])):
        proc = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions",
                               "--select", selection, *extra], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    settings = load_settings()
    raw = read_manifest(settings.manifests_dir / "raw" / "synthetic" / f"{parse_batch_key(key)[1]}.parquet", RAW_RECORDS)
    assert raw.num_rows == 16
    pool = read_manifest(settings.manifests_dir / "filtered_pool.parquet", FILTERED_POOL)
    assert pool.num_rows == 16 - sum(s != "ok" for s in raw.column("status").to_pylist())

    inst2 = dg.DagsterInstance.from_config(str(home))
    event = inst2.get_latest_materialization_event(dg.AssetKey("raw_images"))
    meta = event.asset_materialization.metadata
    assert meta["dagster/row_count"].value == 16 and event.asset_materialization.partition == key
    assert meta["preview"].value.startswith("![raw images](data:image/png;base64,")
    pool_meta = inst2.get_latest_materialization_event(dg.AssetKey("filtered_pool")).asset_materialization.metadata
    assert pool_meta["kept"].value + pool_meta["rejected"].value + pool_meta["errors"].value == 16
    check = inst2.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("filtered_pool"), "filtered_pool_suite"), limit=1)
    assert check and check[0].status.value == "SUCCEEDED"


def test_schedule_adds_one_partition_per_source(workspace, instance):
    inst, _ = instance
    from orchestration.resources import FlywheelResource

    schedule = defs.resolve_schedule_def("weekly_source_refresh")
    import datetime as dt

    ctx = dg.build_schedule_context(instance=inst, scheduled_execution_time=dt.datetime(2026, 11, 23, 3, tzinfo=dt.timezone.utc),
                                    resources={"flywheel": FlywheelResource()}, repository_def=defs.get_repository_def())
    requests = list(schedule.evaluate_tick(ctx).run_requests)
    assert [r.partition_key for r in requests] == ["synthetic--20261123T030000Z"]
    assert inst.get_dynamic_partitions(source_batches.name) == ["synthetic--20261123T030000Z"]


def test_sensor_refreshes_only_when_the_pool_is_low_and_once_per_reading(workspace, instance):
    inst, _ = instance
    from orchestration.resources import FlywheelResource
    from orchestration.sensors import pool_below_lower_bound

    def tick(cursor=None):
        ctx = dg.build_sensor_context(instance=inst, cursor=cursor, resources={"flywheel": FlywheelResource()})
        return pool_below_lower_bound(ctx), ctx.cursor

    result, _ = tick()
    assert isinstance(result, dg.SkipReason) and "not been materialized" in result.skip_message

    def report(kept: int) -> None:
        inst.report_runless_asset_event(dg.AssetMaterialization("filtered_pool", metadata={"kept": kept}))

    report(5)  # the test profile's lower bound is 1000
    first, cursor = tick()
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    assert first.dynamic_partitions_requests[0].partition_keys == [first.run_requests[0].partition_key]
    again, _ = tick(cursor)
    assert isinstance(again, dg.SkipReason) and "already acted" in again.skip_message
    report(5000)
    enough, _ = tick(cursor)
    assert isinstance(enough, dg.SkipReason) and "lower bound" in enough.skip_message


def test_annotation_sensor_turns_the_flywheel_with_the_data(workspace, instance):
    """Iterations until they stop, then the annotated pool once; a pool with new content (its data
    version moved) starts one more iteration, a re-filter with the same content does nothing."""
    inst, _ = instance
    from assets.annotation import POOL_VERSION
    from orchestration.resources import FlywheelResource
    from orchestration.sensors import next_annotation_iteration

    def tick():
        return next_annotation_iteration(dg.build_sensor_context(instance=inst, resources={"flywheel": FlywheelResource()}))

    def pool(version: str) -> None:
        inst.report_runless_asset_event(dg.AssetMaterialization("filtered_pool", metadata={"kept": 5},
                                                                tags={"dagster/data_version": version}))

    def iteration(key: str, stop: str, status: str = "done", seen: str = "v1") -> None:
        inst.report_runless_asset_event(dg.AssetMaterialization(
            "annotation_iteration", partition=key, metadata={"stop_reason": stop, "status": status, POOL_VERSION: seen}))

    result = tick()
    assert isinstance(result, dg.SkipReason) and "no filtered pool" in result.skip_message
    pool("v1")
    assert [r.partition_key for r in tick().run_requests] == ["iter-0000"]
    iteration("iter-0000", "continue")
    nxt = tick()
    assert [r.partition_key for r in nxt.run_requests] == ["iter-0001"]
    assert nxt.dynamic_partitions_requests[0].partition_keys == ["iter-0001"]
    iteration("iter-0001", "continue", status="waiting")
    poll = tick()
    assert isinstance(poll, dg.RunRequest) and poll.partition_key == "iter-0001" and "poll" in poll.run_key
    iteration("iter-0001", "every category meets the target")
    annotate = tick()
    assert isinstance(annotate, dg.RunRequest) and annotate.job_name == "annotated_pool_job"
    assert tick().run_key == annotate.run_key  # the same reading asks for the same run (the daemon runs it once)
    inst.report_runless_asset_event(dg.AssetMaterialization("annotated_pool"))
    done = tick()
    assert isinstance(done, dg.SkipReason) and "every category meets the target" in done.skip_message
    pool("v1")  # a refresh that kept nothing new
    assert isinstance(tick(), dg.SkipReason)
    pool("v2")  # new images kept: the flywheel turns once more
    assert [r.partition_key for r in tick().run_requests] == ["iter-0002"]
