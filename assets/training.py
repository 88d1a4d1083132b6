"""Training assets: each new CosmicMan-HQ version trains the plain fine-tune and Daring
(declarative automation), one at a time on the accelerator; the activation sweep on demand."""

import dagster as dg

from assets.conditions import on_new_data
from assets.metadata import ROW_COUNT, table
from assets.snapshot import cosmicman_hq_snapshot
from flywheel.preview import decode_rgb, markdown_image
from orchestration.k8s import GPU_TRAINING_TAGS
from orchestration.resources import FlywheelResource
from training.stages import (
    activation_sweep,
    build_kosmos_pairs,
    train_dual_prior,
    train_kosmos_g,
    train_variant,
)

ACCELERATOR_POOL = "accelerator"  # a pool of one (infra/dagster): two trainings never share the device


def model_version(run) -> dg.DataVersion:
    """A training's output is a registered model version: that is its data version."""
    return dg.DataVersion(f"{run.model_name}/{run.model_version}")


def _metadata(settings, run) -> dict:
    meta = {
        "mlflow_run": dg.MetadataValue.url(settings.tracking.run_url(run.experiment_id, run.run_id)),
        "mlflow_run_id": dg.MetadataValue.text(run.run_id),
        "model": dg.MetadataValue.text(f"{run.model_name} version {run.model_version}"),
        "model_version": dg.MetadataValue.int(int(run.model_version)),
        "model_version_page": dg.MetadataValue.url(settings.tracking.model_version_url(run.model_name, run.model_version)),
        "snapshot_tag": dg.MetadataValue.text(run.snapshot_tag or "untagged"),
        "samples": dg.MetadataValue.md(markdown_image(decode_rgb(run.grid_png, max_side=512), "validation samples")),
    }
    meta.update({k: dg.MetadataValue.float(float(v)) for k, v in run.metrics.items()})
    return meta


def _training_asset(name: str, beta: float | None, description: str):
    @dg.asset(name=name, group_name="training", kinds={"pytorch", "mlflow"}, deps=[cosmicman_hq_snapshot],
              pool=ACCELERATOR_POOL, op_tags=GPU_TRAINING_TAGS, automation_condition=on_new_data(),
              description=description)
    def _asset(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
        settings = flywheel.settings
        run = train_variant(settings, name.removesuffix("_checkpoint").replace("_", "-"), beta=beta,
                            tags={"dagster.run_id": context.run_id})
        return dg.MaterializeResult(metadata=_metadata(settings, run), data_version=model_version(run))

    return _asset


plain_finetune_checkpoint = _training_asset(
    "plain_finetune_checkpoint", 0.0, "The baseline: denoising fine-tune on the latest CosmicMan-HQ version (β = 0).")
daring_checkpoint = _training_asset(
    "daring_checkpoint", None, "Daring: denoising + HOLA attention supervision (α·L_noise + β·L_HOLA, β from the "
    "profile) on the latest CosmicMan-HQ version; registered as a new MLflow model version.")


@dg.asset(group_name="training", kinds={"pytorch", "mlflow"}, deps=[cosmicman_hq_snapshot], pool=ACCELERATOR_POOL,
          op_tags=GPU_TRAINING_TAGS,
          description="CosmicMan Prime: one Daring run per configured activation, same data and seed, compared in MLflow.")
def activation_sweep_checkpoints(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    runs = activation_sweep(flywheel.settings, tags={"dagster.run_id": context.run_id})
    rows = [(a, r.model_version, r.metrics.get("attention_iou"), r.metrics.get("final_loss_noise"))
            for a, r in zip(flywheel.settings.training.activations, runs)]
    return dg.MaterializeResult(metadata={"comparison": table(rows, [
        ("activation", "string"), ("model_version", "string"), ("attention_iou", "float"), ("final_loss_noise", "float")])})


@dg.asset(group_name="training", kinds={"pytorch", "mlflow"}, pool=ACCELERATOR_POOL, op_tags=GPU_TRAINING_TAGS,
          # the plain fine-tune is the pretrained denoiser it adapts when dual_prior.base_variant names it
          deps=[cosmicman_hq_snapshot, plain_finetune_checkpoint],
          automation_condition=on_new_data(same_run_as=("plain_finetune_checkpoint",)),
          description="Dual-level prior: stage 1 binds human tokens and the <sds> pose token to person and skeleton masks, "
          "stage 2 rectifies their maps against WGAN-GP critics; LoRA + token embedding registered in MLflow.")
def adversarial_checkpoint(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    settings = flywheel.settings
    run = train_dual_prior(settings, tags={"dagster.run_id": context.run_id})
    meta = {"mlflow_run": dg.MetadataValue.url(settings.tracking.run_url(run.experiment_id, run.run_id)),
            "mlflow_run_id": dg.MetadataValue.text(run.run_id),
            "stage_runs": dg.MetadataValue.json(run.stage_run_ids),
            "model": dg.MetadataValue.text(f"{run.model_name} version {run.model_version}"),
            "model_version": dg.MetadataValue.int(int(run.model_version)),
            "model_version_page": dg.MetadataValue.url(settings.tracking.model_version_url(run.model_name, run.model_version))}
    meta.update({k: dg.MetadataValue.float(float(v)) for k, v in run.metrics.items()})
    return dg.MaterializeResult(metadata=meta, data_version=model_version(run))


@dg.asset(group_name="training", kinds={"parquet"}, deps=[cosmicman_hq_snapshot],
          description="KOSMOS-G's compositional pairs: each snapshot image's garments cut out by their parsing classes "
          "(grey outside), with their caption words and a reference crop of the same garment on another person "
          "(schema: training/kosmos/pairs.py). Materialized on demand, before KOSMOS-G instruction tuning.")
def kosmos_pairs(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    path, stats = build_kosmos_pairs(flywheel.settings)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(f"{stats['tag']}/pairs"),
        metadata={ROW_COUNT: dg.MetadataValue.int(stats["rows"]), "path": dg.MetadataValue.path(str(path)),
                  "snapshot_tag": dg.MetadataValue.text(stats["tag"] or "untagged"),
                  "samples": dg.MetadataValue.int(stats["samples"]),
                  "with_reference": dg.MetadataValue.int(stats["with_reference"]),
                  "parts": table(sorted(stats["parts"].items()), [("part", "string"), ("rows", "int")])})


@dg.asset(group_name="training", kinds={"pytorch", "mlflow"}, deps=[kosmos_pairs], pool=ACCELERATOR_POOL,
          op_tags=GPU_TRAINING_TAGS,
          description="KOSMOS-G: the source model's own pretraining, AlignerNet aligned to the base's text conditioning, "
          "then compositional instruction tuning on kosmos_pairs through the frozen UNet; one nested MLflow run and one "
          "registered version per stage, and the subject figures of held-out garments. On demand, not automated.")
def kosmos_g_checkpoint(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    settings = flywheel.settings
    run = train_kosmos_g(settings, tags={"dagster.run_id": context.run_id})
    last = list(run.versions)[-1]
    meta = {"mlflow_run": dg.MetadataValue.url(settings.tracking.run_url(run.experiment_id, run.run_id)),
            "mlflow_run_id": dg.MetadataValue.text(run.run_id),
            "stage_runs": dg.MetadataValue.json(run.stage_run_ids),
            "stage_versions": dg.MetadataValue.json(run.versions),
            "model_version_page": dg.MetadataValue.url(settings.tracking.model_version_url(run.model_name,
                                                                                         run.versions[last]))}
    meta.update({k: dg.MetadataValue.float(float(v)) for k, v in run.metrics.items()})
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(f"{run.model_name}/{run.versions[last]}"))
