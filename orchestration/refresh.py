"""Starting a dataset refresh: one new dynamic partition of `raw_images` per source.

Shared by the weekly schedule, the low-pool sensor and `python -m orchestration.refresh`
(the demo's main job, which runs the refresh in-process against the real instance and
then materializes everything downstream).
"""

from datetime import datetime, timezone

import dagster as dg

from assets.partitions import (
    annotation_iterations,
    batch_key,
    iteration_key,
    source_batches,
)
from flywheel.settings import Settings, load_settings


def new_batch_keys(settings: Settings, when: datetime | None = None) -> list[str]:
    when = when or datetime.now(timezone.utc)
    return [batch_key(s.name, when) for s in settings.all_sources()]


def run_requests(keys: list[str], reason: str) -> list[dg.RunRequest]:
    return [dg.RunRequest(run_key=key, partition_key=key, tags={"cosmicman/refresh": reason}) for key in keys]


def main() -> int:
    """Refresh every source, filter, turn the annotation flywheel until it stops, annotate the
    pool, publish the next CosmicMan-HQ version, train the plain fine-tune, Daring and the dual-prior model on it and
    write the evaluation report comparing them with the base model: in this process, against the instance in $DAGSTER_HOME."""
    from flywheel.stages import annotation_folder
    from orchestration.definitions import defs

    settings = load_settings()
    instance = dg.DagsterInstance.get()
    job = defs.resolve_implicit_global_asset_job_def()

    def materialize(keys: list[str], partition: str | None = None) -> bool:
        print(f"refresh: materializing {', '.join(keys)}" + (f" [{partition}]" if partition else ""))
        result = job.execute_in_process(instance=instance, partition_key=partition,
                                        asset_selection=[dg.AssetKey(k) for k in keys])
        return result.success

    keys = new_batch_keys(settings)
    instance.add_dynamic_partitions(source_batches.name, keys)
    if not all(materialize(["raw_images"], key) for key in keys) or not materialize(["filtered_pool"]):
        return 1

    done = sorted((annotation_folder(settings) / "iterations").glob("iter-*/metrics.json"))
    k = len(done)
    while k < 1000:
        key = iteration_key(k)
        instance.add_dynamic_partitions(annotation_iterations.name, [key])
        if not materialize(["annotation_iteration"], key):
            return 1
        event = instance.get_latest_materialization_event(dg.AssetKey("annotation_iteration"))
        meta = event.asset_materialization.metadata
        if meta["status"].value == "waiting":
            print(f"refresh: {key} waits for people in Label Studio; the next_annotation_iteration sensor "
                  "collects their answers and continues")
            return 0
        if meta["stop_reason"].value != "continue":
            print(f"refresh: annotation iterations stopped: {meta['stop_reason'].value}")
            break
        k += 1
    ok = materialize(["annotated_pool"]) and materialize(["cosmicman_hq_snapshot"])
    trained = all(materialize([key]) for key in ("plain_finetune_checkpoint", "daring_checkpoint", "adversarial_checkpoint"))
    evaluated = trained and materialize(["evaluation_report"])
    if evaluated:
        event = instance.get_latest_materialization_event(dg.AssetKey("evaluation_report"))
        print(f"refresh: evaluation report at {event.asset_materialization.metadata['report'].value}")
    return 0 if ok and evaluated else 1


if __name__ == "__main__":
    raise SystemExit(main())
