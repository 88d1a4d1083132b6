"""Sensors: refresh the sources when the kept pool falls below its lower bound."""

import dagster as dg

from assets.partitions import annotation_iterations, iteration_key, parse_iteration_key, source_batches
from orchestration.refresh import new_batch_keys, run_requests
from orchestration.resources import FlywheelResource
from orchestration.schedules import raw_refresh_job


@dg.sensor(job=raw_refresh_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def pool_below_lower_bound(context: dg.SensorEvaluationContext, flywheel: FlywheelResource):
    """The paper's trigger: when the filtered pool keeps fewer than `min_pool_size` images, source more.

    The cursor holds the storage id of the filtered_pool materialization last acted on, so one
    low reading starts one refresh, not one per evaluation."""
    records = context.instance.fetch_materializations(dg.AssetKey("filtered_pool"), limit=1).records
    if not records:
        return dg.SkipReason("filtered_pool has not been materialized yet")
    event = records[0]
    if context.cursor == str(event.storage_id):
        return dg.SkipReason("already acted on the latest filtered_pool")
    kept = event.asset_materialization.metadata.get("kept")
    kept = kept.value if kept is not None else 0
    bound = flywheel.settings.min_pool_size
    if kept >= bound:
        context.update_cursor(str(event.storage_id))
        return dg.SkipReason(f"pool keeps {kept} images (lower bound {bound})")
    keys = new_batch_keys(flywheel.settings)
    context.update_cursor(str(event.storage_id))
    return dg.SensorResult(run_requests=run_requests(keys, f"pool {kept} < {bound}"),
                           dynamic_partitions_requests=[source_batches.build_add_request(keys)])


annotation_job = dg.define_asset_job("annotation_iteration_job", selection="key:annotation_iteration",
                                     partitions_def=annotation_iterations, description="Run one annotation iteration.")


@dg.sensor(job=annotation_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def next_annotation_iteration(context: dg.SensorEvaluationContext):
    """Keeps the flywheel turning: after an iteration that did not stop, start the next one; while an
    iteration waits for people (Label Studio), run it again to collect their answers once done.

    The cursor holds the storage id of the iteration materialization last acted on."""
    records = context.instance.fetch_materializations(dg.AssetKey("annotation_iteration"), limit=1).records
    if not records:
        if not context.instance.fetch_materializations(dg.AssetKey("filtered_pool"), limit=1).records:
            return dg.SkipReason("no filtered pool yet")
        key = iteration_key(0)
    else:
        latest = records[0]
        if context.cursor == str(latest.storage_id):
            return dg.SkipReason("already acted on the latest iteration")
        context.update_cursor(str(latest.storage_id))
        meta = latest.asset_materialization.metadata
        if "status" in meta and meta["status"].value == "waiting":  # people are still labelling: look again
            key = latest.partition_key
            return dg.RunRequest(run_key=f"{key}-poll-{latest.storage_id}", partition_key=key)
        stop = meta["stop_reason"].value if "stop_reason" in meta else "continue"
        if stop != "continue":
            return dg.SkipReason(f"iterations stopped: {stop}")
        key = iteration_key(parse_iteration_key(latest.partition_key) + 1)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=key, partition_key=key)],
                           dynamic_partitions_requests=[annotation_iterations.build_add_request([key])])
