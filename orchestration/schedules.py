"""Schedules: the weekly source refresh."""

import dagster as dg

from assets.partitions import source_batches
from orchestration.refresh import new_batch_keys, run_requests
from orchestration.resources import FlywheelResource

raw_refresh_job = dg.define_asset_job("source_refresh", selection="key:raw_images", partitions_def=source_batches,
                                      description="Fetch one new batch from one source.")


@dg.schedule(cron_schedule="0 3 * * 1", job=raw_refresh_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_source_refresh(context: dg.ScheduleEvaluationContext, flywheel: FlywheelResource):
    """Every Monday 03:00 UTC: a new batch from every configured source. (Schedules cannot return
    dynamic-partition requests, so the partitions are added through the instance here.)"""
    keys = new_batch_keys(flywheel.settings, context.scheduled_execution_time)
    context.instance.add_dynamic_partitions(source_batches.name, keys)
    return run_requests(keys, "weekly")
