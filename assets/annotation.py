"""Annotation assets: the human-in-the-loop iterations and the annotated pool."""

from collections import Counter

import dagster as dg

from assets.checks import suite_result
from assets.filtering import filtered_pool
from assets.metadata import ROW_COUNT, content_version, data_version_of, table
from assets.partitions import annotation_iterations, parse_iteration_key
from flywheel.annotation.report import ACCURACY_COLUMNS, accuracy_plot, accuracy_rows
from flywheel.preview import decode_rgb, markdown_image
from flywheel.protocol import load_protocol
from flywheel.stages import annotate_pool, read_annotations
from flywheel.stages import annotation_iteration as run_iteration
from flywheel.validation.annotations import validate_annotations
from orchestration.k8s import CPU_DATA_TAGS
from orchestration.resources import FlywheelResource, RayEngine

ANNOTATION_CONTENT = ("record_id", "sha256", "parsing_sha256", "answers", "caption")  # what a snapshot is made of
POOL_VERSION = "filtered_pool_data_version"


@dg.asset(
    group_name="annotation",
    kinds={"pytorch", "mlflow"},
    deps=[filtered_pool],
    partitions_def=annotation_iterations,
    op_tags=CPU_DATA_TAGS,
    description="One Annotate Anyone iteration: measure the annotator per category on I_e, ask people for labels on "
    "the categories below target only, fine-tune, measure again. One MLflow run each.",
)
def annotation_iteration(context: dg.AssetExecutionContext, flywheel: FlywheelResource,
                         ray_engine: RayEngine) -> dg.MaterializeResult:
    settings = flywheel.settings
    ray_engine.connect_for(context, settings, settings.filter.workers)  # new pool images are parsed and viewed there
    k = parse_iteration_key(context.partition_key)
    result, history, run_id = run_iteration(settings, k, run_tags={"dagster.run_id": context.run_id})
    target = settings.annotation.target_accuracy
    pool = context.instance.get_latest_materialization_event(filtered_pool.key)
    meta = {
        # the sensor starts a new iteration when the pool's data version moves past this one
        POOL_VERSION: dg.MetadataValue.text(data_version_of(pool)),
        "status": dg.MetadataValue.text(result.status),
        "categories_labelled": dg.MetadataValue.int(len(result.categories)),
        "images_labelled": dg.MetadataValue.int(result.images),
        "labels_this_iteration": dg.MetadataValue.int(result.labels),
        "labels_total": dg.MetadataValue.int(result.total_labels),
        "stop_reason": dg.MetadataValue.text(result.stop_reason or "continue"),
        "accuracy": table(accuracy_rows(result, target), ACCURACY_COLUMNS),
    }
    if result.accuracy_after:
        meta["mean_accuracy"] = dg.MetadataValue.float(sum(result.accuracy_after.values()) / len(result.accuracy_after))
        meta["categories_below_target"] = dg.MetadataValue.int(sum(v < target for v in result.accuracy_after.values()))
        meta["accuracy_vs_iteration"] = dg.MetadataValue.md(
            markdown_image(decode_rgb(accuracy_plot(history, target), max_side=800), "accuracy per category vs iteration"))
    if run_id:
        meta["mlflow_run_id"] = dg.MetadataValue.text(run_id)
        meta["mlflow_tracking_uri"] = dg.MetadataValue.text(settings.tracking.tracking_uri)
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name="annotation",
    kinds={"parquet"},
    deps=[annotation_iteration],
    op_tags=CPU_DATA_TAGS,
    description="Every kept image with its parsing map, answers to every applicable protocol question (people's "
    "labels where they exist, the final annotator elsewhere) and its grouped caption.",
)
def annotated_pool(context: dg.AssetExecutionContext, flywheel: FlywheelResource,
                   ray_engine: RayEngine) -> dg.MaterializeResult:
    ray_engine.connect_for(context, flywheel.settings, flywheel.settings.filter.workers)  # the annotator labels there
    result = annotate_pool(flywheel.settings)
    for note in result.notes:
        context.log.warning(note)
    rows = result.table.to_pylist()
    origins = Counter(o for r in rows for o in dict(r["answer_origin"] or {}).values())
    parsing = Counter(r["parsing_source"] for r in rows)
    examples = [(r["record_id"][:8], r["caption"]) for r in rows[:8]]
    return dg.MaterializeResult(data_version=content_version(rows, ANNOTATION_CONTENT), metadata={
        ROW_COUNT: dg.MetadataValue.int(len(rows)),
        # the iteration whose annotator labelled the pool: the best on I_e, not necessarily the latest
        "annotator_iteration": dg.MetadataValue.int(rows[0]["iteration"] if rows else -1),
        "annotator_version": dg.MetadataValue.text(rows[0]["annotator_version"] if rows else "none"),
        "answers_by_people": dg.MetadataValue.int(origins.get("human", 0)),
        "answers_by_annotator": dg.MetadataValue.int(origins.get("ai", 0)),
        "parsing_sources": table(sorted(parsing.items()), [("parsing", "string"), ("images", "int")]),
        "caption_examples": table(examples, [("record", "string"), ("caption", "string")]),
        "manifest": dg.MetadataValue.path(str(result.manifest)),
    })


@dg.asset_check(asset=annotated_pool, blocking=True, description="Great Expectations suite: every applicable category "
                "answered within the protocol's answers, hierarchy consistent, captions within the token budget.")
def annotations_suite(flywheel: FlywheelResource) -> dg.AssetCheckResult:
    table = read_annotations(flywheel.settings)
    protocol = load_protocol(flywheel.settings.protocol_path)
    summary = None if table is None else validate_annotations(table, protocol, flywheel.settings.caption_budget, flywheel.settings.data_docs_dir)
    return suite_result(summary, "no annotations manifest")
