"""The evaluation report: every trained variant's newest version next to the base model,
re-evaluated whenever a training asset produces a new version (cached per version)."""

import dagster as dg

from assets.conditions import on_new_data
from assets.metadata import table
from assets.training import (
    adversarial_checkpoint,
    daring_checkpoint,
    plain_finetune_checkpoint,
)
from evaluation.report import judge_trust
from evaluation.stages import JUDGE_THRESHOLD, evaluate
from orchestration.k8s import GPU_EVALUATION_TAGS
from orchestration.resources import FlywheelResource, RayEngine


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


@dg.asset(group_name="evaluation", kinds={"pytorch", "mlflow", "html"}, pool="accelerator",
          op_tags=GPU_EVALUATION_TAGS,
          deps=[plain_finetune_checkpoint, daring_checkpoint, adversarial_checkpoint],
          automation_condition=on_new_data(same_run_as=("plain_finetune_checkpoint", "daring_checkpoint",
                                                        "adversarial_checkpoint")),
          check_specs=[dg.AssetCheckSpec("judge_accuracy", asset="evaluation_report",
                                         description=f"the truth judge scores >= {JUDGE_THRESHOLD} Acc_all on real renders "
                                         "degraded like generated images (else semantic accuracy is indicative only)")],
          description="Evaluation report: semantic accuracy (95% CI) by the truth judge (renderer ground truth only) and "
          "by the flywheel's annotator, attention IoU, PIQE, FD/KID, text-image alignment where weights exist; "
          "metrics on each version's MLflow run; champion aliases moved.")
def evaluation_report(context: dg.AssetExecutionContext, flywheel: FlywheelResource,
                      ray_engine: RayEngine) -> dg.MaterializeResult:
    settings = flywheel.settings
    ray_engine.connect_for(context, settings, settings.filter.workers)  # sampling and truth-judging there
    result = evaluate(settings, tags={"dagster.run_id": context.run_id})
    cols = ["acc_all", "annotator_acc_all", "attention_iou", "piqe", "fd_truth", "fid"]
    rows = [(m["label"], m["version"] or "", *(m["metrics"].get(c) for c in cols)) for m in result.data["models"]]
    judge = judge_trust(result.data["judge"], "degraded")
    return dg.MaterializeResult(
        metadata={"report": dg.MetadataValue.path(str(result.report_html)),
                  "report_json": dg.MetadataValue.path(str(result.report_json)),
                  "mlflow_run": dg.MetadataValue.url(settings.tracking.run_url(result.experiment_id, result.run_id)),
                  # an empty cell is a metric not computed (see "skipped" for why)
                  "metrics": table(rows, [("model", "string"), ("version", "string"), *((c, "float") for c in cols)]),
                  "report_page": dg.MetadataValue.url(result.report_html.resolve().as_uri()),
                  "judge_acc_all": dg.MetadataValue.float(_or_nan(judge)),
                  "champions": dg.MetadataValue.json(result.data["champions"]),
                  "skipped": dg.MetadataValue.json(result.data["skipped"])},
        check_results=[dg.AssetCheckResult(
            check_name="judge_accuracy", passed=bool(judge is not None and judge >= JUDGE_THRESHOLD),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"acc_all": dg.MetadataValue.float(_or_nan(judge)),
                      "clean": dg.MetadataValue.float(_or_nan(judge_trust(result.data["judge"], "clean"))),
                      "annotator_judge_own_maps": dg.MetadataValue.float(
                          _or_nan(judge_trust(result.data["annotator_judge"], "source_parsing")))})])
