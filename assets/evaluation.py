"""The evaluation report: every trained variant's newest version next to the base model,
re-evaluated whenever a training asset produces a new version (cached per version)."""

import dagster as dg

from assets.training import (
    adversarial_checkpoint,
    daring_checkpoint,
    plain_finetune_checkpoint,
)
from evaluation.stages import JUDGE_THRESHOLD, evaluate
from orchestration.resources import FlywheelResource


@dg.asset(group_name="evaluation", kinds={"pytorch", "mlflow", "html"}, pool="accelerator",
          deps=[plain_finetune_checkpoint, daring_checkpoint, adversarial_checkpoint],
          automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec("judge_accuracy", asset="evaluation_report",
                                         description=f"the judge scores >= {JUDGE_THRESHOLD} Acc_all on real synthetic "
                                         "images with their parsing maps (else semantic accuracy is indicative only)")],
          description="Evaluation report: semantic accuracy (annotator as judge, 95% CI), attention IoU, PIQE, FD/KID, "
          "text-image alignment where weights exist; metrics on each version's MLflow run; champion aliases moved.")
def evaluation_report(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    settings = flywheel.settings
    result = evaluate(settings, tags={"dagster.run_id": context.run_id})
    cols = ["acc_all", "attention_iou", "piqe", "fd_judge", "fid"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in result.data["models"]:
        vals = [f"{m['metrics'][c]:.3f}" if c in m["metrics"] else "not computed" for c in cols]
        lines.append(f"| {m['label']} {'v' + m['version'] if m['version'] else ''} | " + " | ".join(vals) + " |")
    judge = result.data["judge"]["calibration"].get("source_parsing", {}).get("acc_all")
    return dg.MaterializeResult(
        metadata={"report": dg.MetadataValue.path(str(result.report_html)),
                  "report_json": dg.MetadataValue.path(str(result.report_json)),
                  "mlflow_run": dg.MetadataValue.url(settings.tracking.run_url(result.experiment_id, result.run_id)),
                  "metrics": dg.MetadataValue.md("\n".join(lines)),
                  "judge_acc_all": dg.MetadataValue.float(judge if judge is not None else float("nan")),
                  "champions": dg.MetadataValue.json(result.data["champions"]),
                  "skipped": dg.MetadataValue.json(result.data["skipped"])},
        check_results=[dg.AssetCheckResult(
            check_name="judge_accuracy", passed=bool(judge is not None and judge >= JUDGE_THRESHOLD),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"acc_all": dg.MetadataValue.float(judge if judge is not None else float("nan")),
                      "through_generated_image_parser": dg.MetadataValue.float(
                          result.data["judge"]["calibration"].get("generated_parser", {}).get("acc_all", float("nan")))})])
