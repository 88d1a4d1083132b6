"""The Dagster code location: assembles assets, resources and jobs; no logic lives here."""

import dagster as dg

from assets import sourcing
from orchestration.resources import FlywheelResource

all_assets = dg.load_assets_from_modules([sourcing])

flywheel_refresh = dg.define_asset_job(
    "flywheel_refresh",
    selection=dg.AssetSelection.all(),
    description="Refresh the dataset: every asset of the flywheel, sources first.",
)

defs = dg.Definitions(
    assets=all_assets,
    jobs=[flywheel_refresh],
    resources={"flywheel": FlywheelResource()},
)
