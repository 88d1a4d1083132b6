"""The CosmicMan-HQ snapshot: each refresh that passes its gates publishes a DVC-tagged version."""

import dagster as dg

from assets.annotation import annotated_pool
from assets.checks import suite_result
from assets.conditions import on_new_data
from assets.metadata import ROW_COUNT, table
from flywheel.stages import publish_snapshot, snapshot_registry
from flywheel.validation.snapshot import validate_snapshot
from orchestration.resources import FlywheelResource


@dg.asset(
    group_name="snapshot",
    kinds={"dvc", "parquet"},
    deps=[annotated_pool],
    pool="dvc",  # DVC holds a repository lock: one publication at a time
    automation_condition=on_new_data(),  # new annotations that passed their suite
    description="CosmicMan-HQ: webdataset shards + Parquet manifests + dataset card, published as the next version "
    "of the DVC data registry (git tag cosmicman-hq-v<N>) when the filtered pool, annotation and snapshot suites pass.",
)
def cosmicman_hq_snapshot(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    result = publish_snapshot(flywheel.settings)
    pub, stats = result.publication, result.stats
    if not pub.new:
        context.log.info(f"inputs equal {pub.tag}; nothing new published")
    rows = [(k, float(stats[k])) for k in ("images", "shards", "mean_height", "mean_width", "categories", "attributes",
                                           "mean_quality", "mean_face_quality")]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(pub.data_hash),
        metadata={
            ROW_COUNT: dg.MetadataValue.int(int(stats["images"])),
            "version": dg.MetadataValue.int(pub.version),
            "tag": dg.MetadataValue.text(pub.tag),
            "data_hash": dg.MetadataValue.text(pub.data_hash),
            "new_version": dg.MetadataValue.bool(pub.new),
            "files_uploaded": dg.MetadataValue.int(pub.uploaded),
            "splits": dg.MetadataValue.json(stats["split_counts"]),
            "person_types": dg.MetadataValue.json(stats["person_types"]),
            "stats": table(rows, [("statistic", "string"), ("value", "float")]),
            "card": dg.MetadataValue.path(str(result.card)),
            "registry": dg.MetadataValue.path(str(snapshot_registry(flywheel.settings).path)),
            "get_command": dg.MetadataValue.text(f"dvc get {snapshot_registry(flywheel.settings).path} "
                                                 f"{flywheel.settings.snapshot.name} --rev {pub.tag}"),
        })


@dg.asset_check(asset=cosmicman_hq_snapshot, description="Great Expectations suite on the published version: every "
                "manifest row has its shard members, every caption group has pixels in its parsing map, split ratio.")
def cosmicman_hq_snapshot_suite(flywheel: FlywheelResource) -> dg.AssetCheckResult:
    s = flywheel.settings
    folder = snapshot_registry(s).current
    summary = validate_snapshot(folder, s.snapshot.test_fraction, s.snapshot.split_tolerance, s.data_docs_dir) \
        if (folder / "manifests").exists() else None
    return suite_result(summary, f"no published snapshot at {folder}")
