"""A tracked dual-prior training: a parent MLflow run with one nested run per stage.

Each stage run logs every loss term per step (noise, suppress/margin/scale for shape and
pose; critic scores, gradient penalty and Wasserstein estimate in stage 2), and images of
the human tokens' and the pose token's maps next to their masks. The parent logs the
held-out IoUs of the base model and after each stage, and registers the result (LoRA
weights plus the pose token's embedding, with the base model) as a model version. Under a
multi-process launch only the main process tracks, evaluates and registers; the others train
their share of both stages and return None.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class DualPriorRun:
    run_id: str
    experiment_id: str
    stage_run_ids: dict[str, str]
    model_name: str
    model_version: str
    metrics: dict[str, float]
    prior_dir: Path


def maps_figure(batch: dict, shape_maps: torch.Tensor, pose_maps: torch.Tensor, n: int = 4) -> np.ndarray:
    """Rows: image, person mask, human-token map, skeleton mask, pose-token map (per sample column)."""
    import cv2

    cols = []
    for b in range(min(n, shape_maps.shape[0])):
        img = ((batch["pixel_values"][b].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        h, w = img.shape[:2]

        def gray(a):
            a = cv2.resize((a.clamp(0, 1).numpy() * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
            return np.repeat(a[..., None], 3, -1)

        cols.append(np.concatenate([img, gray(batch["shape_mask"][b]), gray(shape_maps[b].cpu()),
                                    gray(batch["pose_mask"][b]), gray(pose_maps[b].cpu())], 0))
    return np.concatenate(cols, 1)


def run_dual_prior(profile, snapshot, protocol, base_dir: Path, output_dir: Path, tracking, experiment: str,
                   tags: dict[str, str] | None = None) -> DualPriorRun | None:
    """The tracked dual-prior training (see the module docstring); None on the processes other than the main one."""
    import mlflow

    from flywheel.tracking import flatten, mlflow_run
    from training.base_model import load_base
    from training.distributed import process_state
    from training.dual_prior.alignment import eval_dataset, prior_iou
    from training.dual_prior.trainer import add_pose_token, load_with_prior, train_stage
    from training.run import git_commit

    s = profile.dual_prior
    if profile.threads:
        torch.set_num_threads(profile.threads)
    train_samples = list(snapshot.samples("train"))
    processes = process_state()
    if not processes.is_main_process:  # its share of every step of both stages
        prior = None
        for stage in ("bind", "adversarial"):
            prior = train_stage(stage, s, base_dir, train_samples, protocol, output_dir, init_prior=prior).final_dir
            processes.wait_for_everyone()  # every process has written the stage's prior before any reads it
        return None
    held_out = list(snapshot.samples("test", limit=profile.eval_samples))
    run_tags = tracking.dagster_run_tags({"cosmicman.stage": "dual_prior", "cosmicman.variant": "dual-prior",
                                          "git.commit": git_commit(), **snapshot.tracking_tags(), **(tags or {})})

    def evaluate(model) -> dict[str, float]:
        model.unet.eval()
        return prior_iou(model, model.unet, eval_dataset(held_out, protocol, model, s), s.attention_levels) if held_out else {}

    base = load_base(base_dir)
    add_pose_token(base, s.pose_token, s.init_token)
    metrics = {f"base_{k}": v for k, v in evaluate(base).items()}
    stage_runs: dict[str, str] = {}
    with mlflow_run(tracking, experiment, "dual-prior", tags=run_tags, system_metrics=True) as parent:
        from flywheel.mlflow_dataset import snapshot_dataset

        mlflow.log_input(snapshot_dataset(snapshot), context="training")
        mlflow.log_params(flatten({"base_model": str(base_dir), "train_images": len(train_samples),
                                   "processes": processes.num_processes, **flatten(s.model_dump(mode="json"), "dual_prior.")}))
        prior = None
        for stage in ("bind", "adversarial"):
            with mlflow_run(tracking, experiment, f"dual-prior-{stage}", tags={**run_tags, "dual_prior.stage": stage},
                            nested=True) as child:
                stage_runs[stage] = child.info.run_id
                result = train_stage(stage, s, base_dir, train_samples, protocol, output_dir, init_prior=prior,
                                     on_log=lambda st, k, m: mlflow.log_metrics(m, step=k),
                                     on_maps=lambda st, k, batch, sm, pm: mlflow.log_image(maps_figure(batch, sm, pm),
                                                                                           key=f"{st}_maps", step=k))
                prior = result.final_dir
                processes.wait_for_everyone()
                after = {f"{stage}_{k}": v for k, v in evaluate(load_with_prior(base_dir, prior)).items()}
                mlflow.log_metrics(after)
                metrics.update(after)
        mlflow.log_metrics(metrics)
        package = output_dir / "package"
        shutil.rmtree(package, ignore_errors=True)
        shutil.copytree(prior, package / "prior")
        shutil.copytree(base_dir, package / "base")
        from training.mlflow_model import DUAL_PRIOR_PIPELINE, log_and_register

        version, _ = log_and_register(
            DUAL_PRIOR_PIPELINE, {"base": str(package / "base"), "prior": str(package / "prior")},
            s.registered_model, "dual-prior",
            {"snapshot.tag": snapshot.tag or "untagged", "snapshot.data_hash": snapshot.data_hash or "unknown",
             "snapshot.version": snapshot.version, "git.commit": run_tags["git.commit"],
             "dagster.run_id": run_tags.get("dagster.run_id", "none"), "pose_token": s.pose_token},
            extra_requirements=("peft",))
        return DualPriorRun(parent.info.run_id, parent.info.experiment_id, stage_runs, s.registered_model, version, metrics,
                            prior)
