"""Sourcing assets: candidate images from the configured sources into the store."""

import json
from collections import Counter

import dagster as dg

from assets.metadata import ROW_COUNT, content_version, table
from assets.partitions import parse_batch_key, source_batches
from flywheel.preview import contact_sheet, decode_rgb, markdown_image
from flywheel.stages import source_batch
from orchestration.resources import FlywheelResource


@dg.asset(
    group_name="sourcing",
    kinds={"python", "parquet"},
    partitions_def=source_batches,
    description="Every candidate image one source offered in one refresh, stored by content hash, with its raw "
    "record (failures included, with their reason) and any side-car annotations.",
)
def raw_images(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    settings = flywheel.settings
    source, batch = parse_batch_key(context.partition_key)

    def progress(done: int, total: int) -> None:
        if done % 250 == 0 or done == total:
            context.log.info(f"{source}: {done}/{total}")

    result = source_batch(settings, source, batch, progress=progress)
    rows = result.table.to_pylist()
    status = Counter(r["status"] for r in rows)
    reasons = Counter(f"{r['status']}: {r['reason']}" for r in rows if r["status"] != "ok")
    store = flywheel.store()
    shown = [r for r in rows if r["status"] == "ok"][: settings.preview_size]
    labels = []
    for r in shown:
        truth = json.loads(r["sidecar_json"]) if r["sidecar_json"] else {}
        labels.append(truth.get("defect") or ("clean" if "defect" in truth else r["item"][-18:]))
    metadata = {
        "source": dg.MetadataValue.text(source),
        ROW_COUNT: dg.MetadataValue.int(len(rows)),
        "fetched": dg.MetadataValue.int(status.get("ok", 0)),
        "failed": dg.MetadataValue.int(len(rows) - status.get("ok", 0)),
        "bytes": dg.MetadataValue.int(sum(r["n_bytes"] or 0 for r in rows)),
        "images_per_second": dg.MetadataValue.float(round(result.rows_per_second, 1)),
        "manifest": dg.MetadataValue.path(str(result.manifest)),
        "status": table(sorted(status.items()), [("status", "string"), ("records", "int")]),
    }
    if reasons:
        metadata["failure_reasons"] = table(reasons.most_common(20), [("reason", "string"), ("records", "int")])
    if shown:
        sheet = contact_sheet([decode_rgb(store.get(r["sha256"])) for r in shown], labels)
        metadata["preview"] = dg.MetadataValue.md(markdown_image(sheet, "raw images"))
    return dg.MaterializeResult(metadata=metadata,
                                data_version=content_version(rows, ("record_id", "status", "sha256")))
