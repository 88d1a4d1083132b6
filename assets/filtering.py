"""Filtering assets: the filtered pool and its blocking data-quality check."""

from collections import Counter

import dagster as dg

from assets.checks import suite_result
from assets.conditions import after_new_batches
from assets.metadata import ROW_COUNT, content_version, table
from assets.sourcing import raw_images
from flywheel.preview import contact_sheet, decode_rgb, markdown_image
from flywheel.stages import filter_pool, read_filtered_pool
from flywheel.validation.filtered_pool import validate_filtered_pool
from orchestration.k8s import CPU_DATA_TAGS
from orchestration.resources import FlywheelResource, RayEngine


@dg.asset(
    group_name="filtering",
    kinds={"python", "parquet"},
    deps=[raw_images],
    op_tags=CPU_DATA_TAGS,
    automation_condition=after_new_batches(),
    description="Every fetched image with its scores and verdict: decodable, large enough, not a duplicate, "
    "exactly one person, a large enough face, good enough quality. Rejected rows keep their reasons.",
)
def filtered_pool(context: dg.AssetExecutionContext, flywheel: FlywheelResource, ray_engine: RayEngine) -> dg.MaterializeResult:
    settings = flywheel.settings
    ray_engine.connect_for(context, settings, settings.filter.workers)

    def progress(done: int, total: int) -> None:
        if done % 250 == 0 or done == total:
            context.log.info(f"analysed {done}/{total}")

    result, run = filter_pool(settings, progress=progress)
    for note in run.notes:
        context.log.warning(note)
    rows = result.table.to_pylist()
    verdicts = Counter(r["verdict"] for r in rows)
    reasons = Counter(reason for r in rows for reason in (r["reasons"] or []))
    store = flywheel.store()
    n = max(1, settings.preview_size // 2)
    kept = [r for r in rows if r["verdict"] == "keep"][:n]
    rejected = [r for r in rows if r["verdict"] != "keep"][:n]
    sheet = contact_sheet([decode_rgb(store.get(r["sha256"])) for r in kept + rejected],
                          ["keep"] * len(kept) + [",".join(r["reasons"]) for r in rejected])
    # the kept set and every verdict: a re-filter that changes neither leaves the flywheel alone
    return dg.MaterializeResult(data_version=content_version(rows, ("record_id", "sha256", "verdict")), metadata={
        ROW_COUNT: dg.MetadataValue.int(len(rows)),
        "kept": dg.MetadataValue.int(verdicts.get("keep", 0)),
        "rejected": dg.MetadataValue.int(verdicts.get("reject", 0)),
        "errors": dg.MetadataValue.int(verdicts.get("error", 0)),
        "analysed_this_run": dg.MetadataValue.int(run.analysed),
        "reused_analyses": dg.MetadataValue.int(run.reused),
        "analysis_images_per_second": dg.MetadataValue.float(round(run.analysed / run.analysis_seconds, 1) if run.analysis_seconds else 0.0),
        "reasons": table(reasons.most_common(), [("reason", "string"), ("records", "int")]),
        "ms_per_image_by_step": table(run.ms_per_image_by_step.items(), [("step", "string"), ("ms", "float")]),
        "backends_off": dg.MetadataValue.md("\n".join(f"- {n}" for n in run.notes) or "none"),
        "manifest": dg.MetadataValue.path(str(result.manifest)),
        "preview": dg.MetadataValue.md(markdown_image(sheet, "kept, then rejected with reasons")),
    })


@dg.asset_check(asset=filtered_pool, blocking=True, description="Great Expectations suite: schema, value ranges, one "
                "person and a large enough face per kept image, no duplicate content among kept images.")
def filtered_pool_suite(flywheel: FlywheelResource) -> dg.AssetCheckResult:
    table = read_filtered_pool(flywheel.settings)
    summary = None if table is None else validate_filtered_pool(table, flywheel.settings.filter, flywheel.settings.data_docs_dir)
    return suite_result(summary, "no filtered pool manifest")
