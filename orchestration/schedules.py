"""Schedules: the weekly source refresh."""

import dagster as dg

from assets.partitions import source_batches
from flywheel.settings import load_settings
from orchestration.refresh import new_batch_keys, run_requests
from orchestration.resources import FlywheelResource

raw_refresh_job = dg.define_asset_job("source_refresh", selection="key:raw_images", partitions_def=source_batches,
                                      description="Fetch one new batch from one source.")


# STOPPED until a user turns it on: each tick fetches from every configured source (network, quotas)
@dg.schedule(cron_schedule=load_settings().refresh_cron, job=raw_refresh_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_source_refresh(context: dg.ScheduleEvaluationContext, flywheel: FlywheelResource):
    """A new batch from every configured source (by default every Monday 03:00 UTC: the profile's
    ``refresh_cron``); the flywheel sensor and the automation conditions carry it to a report.
    (Schedules cannot return dynamic-partition requests, so the partitions are added through the
    instance here.)"""
    keys = new_batch_keys(flywheel.settings, context.scheduled_execution_time)
    context.instance.add_dynamic_partitions(source_batches.name, keys)
    return run_requests(keys, "weekly")
