"""Sourcing assets: candidate images from the configured sources into the store."""


import json
from collections import Counter

import dagster as dg

from flywheel.preview import contact_sheet, decode_rgb, markdown_image, markdown_table
from flywheel.stages import source_synthetic
from orchestration.resources import FlywheelResource


@dg.asset(
    group_name="sourcing",
    kinds={"python", "parquet"},
    description="Every candidate image the sources offered, stored by content hash, with its raw record "
    "(failures included) and any side-car ground truth.",
)
def raw_images(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    settings = flywheel.settings
    store = flywheel.store()

    def progress(done: int, total: int) -> None:
        if done % 250 == 0 or done == total:
            context.log.info(f"synthetic: {done}/{total} rendered")

    result = source_synthetic(settings, progress=progress)
    path = result.manifest

    rows = result.table.to_pylist()
    truths = [json.loads(r["sidecar_json"]) if r["sidecar_json"] else {} for r in rows]
    defects = Counter(t.get("defect") or "clean" for t in truths)
    status = Counter(r["status"] for r in rows)
    shown = rows[: settings.preview_size]
    sheet = contact_sheet([decode_rgb(store.get(r["sha256"])) for r in shown],
                          [t.get("defect") or "clean" for t in truths[: len(shown)]])
    return dg.MaterializeResult(metadata={
        "records": dg.MetadataValue.int(len(rows)),
        "ok": dg.MetadataValue.int(status.get("ok", 0)),
        "bytes": dg.MetadataValue.int(sum(r["n_bytes"] or 0 for r in rows)),
        "images_per_second": dg.MetadataValue.float(round(result.rows_per_second, 1)),
        "manifest": dg.MetadataValue.path(str(path)),
        "status": dg.MetadataValue.md(markdown_table(sorted(status.items()), ["status", "records"])),
        "ground_truth_defects": dg.MetadataValue.md(markdown_table(sorted(defects.items()), ["defect", "records"])),
        "preview": dg.MetadataValue.md(markdown_image(sheet, "raw images")),
    })
