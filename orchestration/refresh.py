"""Starting a dataset refresh: one new dynamic partition of `raw_images` per source.

Shared by the weekly schedule, the low-pool sensor and `python -m orchestration.refresh`
(the demo's main job, which runs the refresh in-process against the real instance and
then materializes everything downstream).
"""

from datetime import datetime, timezone

import dagster as dg

from assets.partitions import batch_key, source_batches
from flywheel.settings import Settings, load_settings


def new_batch_keys(settings: Settings, when: datetime | None = None) -> list[str]:
    when = when or datetime.now(timezone.utc)
    return [batch_key(s.name, when) for s in settings.all_sources()]


def run_requests(keys: list[str], reason: str) -> list[dg.RunRequest]:
    return [dg.RunRequest(run_key=key, partition_key=key, tags={"cosmicman/refresh": reason}) for key in keys]


def main() -> int:
    """Refresh every source and materialize all downstream assets, in this process."""
    from orchestration.definitions import defs

    settings = load_settings()
    instance = dg.DagsterInstance.get()
    keys = new_batch_keys(settings)
    instance.add_dynamic_partitions(source_batches.name, keys)
    job = defs.resolve_implicit_global_asset_job_def()
    for key in keys:
        print(f"refresh: materializing raw_images partition {key}")
        result = job.execute_in_process(instance=instance, partition_key=key,
                                        asset_selection=[dg.AssetKey("raw_images")])
        if not result.success:
            return 1
    downstream = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k != dg.AssetKey("raw_images")]
    print(f"refresh: materializing {', '.join(k.to_user_string() for k in downstream)}")
    result = job.execute_in_process(instance=instance, asset_selection=downstream)
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
