"""The Dagster code location: assembles assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from assets import annotation, evaluation, filtering, snapshot, sourcing, training
from orchestration.k8s import selected_executor
from orchestration.resources import FlywheelResource, RayEngine
from orchestration.schedules import raw_refresh_job, weekly_source_refresh
from orchestration.sensors import (
    annotated_pool_job,
    annotation_job,
    automation,
    next_annotation_iteration,
    pool_below_lower_bound,
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([sourcing, filtering, annotation, snapshot, training, evaluation]),
    asset_checks=dg.load_asset_checks_from_modules([filtering, annotation, snapshot]),
    jobs=[raw_refresh_job, annotation_job, annotated_pool_job],
    schedules=[weekly_source_refresh],
    sensors=[pool_below_lower_bound, next_annotation_iteration, automation],
    resources={"flywheel": FlywheelResource(), "ray_engine": RayEngine()},
    executor=selected_executor(),  # COSMICMAN_EXECUTOR=k8s: one Kubernetes Job per step
)
