"""Sensors: refresh the sources when the kept pool falls below its lower bound; turn the annotation flywheel."""

import dagster as dg

from assets.annotation import POOL_VERSION
from assets.metadata import data_version_of
from assets.partitions import (
    annotation_iterations,
    iteration_key,
    parse_iteration_key,
    source_batches,
)
from flywheel.stages import labelling_pending
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


# RUNNING by default: it only reacts to new data, so with the schedule off nothing runs by itself
automation = dg.AutomationConditionSensorDefinition(
    "flywheel_automation", target="*", default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15,
    description="Declarative automation: the filtered pool after new batches, then snapshot, trainings and "
    "evaluation whenever their inputs' data versions change and upstream blocking checks pass.")

annotation_job = dg.define_asset_job("annotation_iteration_job", selection="key:annotation_iteration",
                                     partitions_def=annotation_iterations, description="Run one annotation iteration.")
annotated_pool_job = dg.define_asset_job("annotated_pool_job", selection="key:annotated_pool",
                                         description="Label the whole pool with the final annotator and caption it.")


@dg.sensor(jobs=[annotation_job, annotated_pool_job], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def next_annotation_iteration(context: dg.SensorEvaluationContext, flywheel: FlywheelResource):
    """Keeps the flywheel turning with the data:

    - a filtered pool and no iteration yet: iteration 0;
    - an iteration waiting for people (Label Studio): run it again once every task is answered
      (the sensor asks Label Studio; until then nothing runs or materializes);
    - an iteration that did not stop: the next one;
    - iterations stopped, and the pool's data version moved past the one they ran on (a refresh
      kept new images): one more iteration, whose own stop rule decides whether people are asked;
    - iterations stopped on the current pool: ``annotated_pool``, once per stopping iteration.

    Run keys carry the storage id acted on, so each reading starts one run, not one per tick."""
    pool = context.instance.get_latest_materialization_event(dg.AssetKey("filtered_pool"))
    if pool is None:
        return dg.SkipReason("no filtered pool yet")
    records = context.instance.fetch_materializations(dg.AssetKey("annotation_iteration"), limit=1).records
    if not records:
        return _iteration(iteration_key(0))
    latest = records[0]
    meta = latest.asset_materialization.metadata
    if "status" in meta and meta["status"].value == "waiting":
        pending = labelling_pending(flywheel.settings, latest.partition_key)
        if pending:
            return dg.SkipReason(f"{latest.partition_key}: {pending} Label Studio tasks not answered yet")
        return dg.RunRequest(run_key=f"{latest.partition_key}-poll-{latest.storage_id}", job_name=annotation_job.name,
                             partition_key=latest.partition_key)
    stop = meta["stop_reason"].value if "stop_reason" in meta else "continue"
    after = parse_iteration_key(latest.partition_key) + 1
    if stop == "continue":
        return _iteration(iteration_key(after))
    seen = meta[POOL_VERSION].value if POOL_VERSION in meta else ""
    if data_version_of(pool) and data_version_of(pool) != seen:
        context.log.info(f"pool {data_version_of(pool)} is newer than the one {latest.partition_key} ran on ({seen})")
        return _iteration(iteration_key(after))
    annotated = context.instance.fetch_materializations(dg.AssetKey("annotated_pool"), limit=1).records
    if annotated and annotated[0].storage_id > latest.storage_id:
        return dg.SkipReason(f"iterations stopped ({stop}); the pool is annotated")
    return dg.RunRequest(run_key=f"annotate-after-{latest.storage_id}", job_name=annotated_pool_job.name,
                         tags={"cosmicman/flywheel": f"iterations stopped: {stop}"})


def _iteration(key: str) -> dg.SensorResult:
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=key, job_name=annotation_job.name, partition_key=key)],
                           dynamic_partitions_requests=[annotation_iterations.build_add_request([key])])
