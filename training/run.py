"""One tracked training run: snapshot in, registered MLflow model version out.

Reads a CosmicMan-HQ version (by number, default the latest published), trains with
:func:`training.trainer.train`, and logs to one MLflow run: every setting as a parameter,
the snapshot's tag and data hash, step-wise L_noise / L_HOLA / learning rate, attention
maps of a fixed sample next to its masks every N steps, validation samples, the
attention-mask IoU on held-out (test split) samples, and the final pipeline registered as
a new version of the registered model, tagged with snapshot version, git commit and the
Dagster run id (a LoRA training registers the base and its adapter). No settings that name
secrets are logged (see :func:`flywheel.tracking.flatten`). Under a multi-process launch only the
main process does any of this; the others take their part in training and return None.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flywheel.faults import kill_point
from flywheel.preview import png_bytes
from training.settings import TrainingProfile


@dataclass
class TrainingRun:
    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    metrics: dict[str, float]
    grid_png: bytes
    output_dir: Path
    snapshot_tag: str | None
    history: list = None  # (step, StepLosses) every log_every steps
    model_id: str | None = None  # the MLflow 3 logged model


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=Path(__file__).parent)
    return proc.stdout.strip() or "unknown"


def attention_figure(base, unet, dataset, store, index: int = 0) -> np.ndarray:
    """One fixed sample: the image, then per masked group its mask, its mean attention map, and
    that map overlaid on the image (three rows)."""
    from training.alignment import group_maps
    from training.attention import install_capture
    from training.data import collate

    item = dataset[index]
    batch = collate([item])
    was = dict(unet.attn_processors)  # the trainer's own processors go back afterwards
    install_capture(unet, store)
    try:
        maps = group_maps(base, unet, batch, store)[0].cpu().numpy()
    finally:
        unet.set_attn_processor(was)
    image = ((item["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    groups = [g for g in range(maps.shape[0]) if item["group_valid"][g]]
    import cv2

    h, w = image.shape[:2]
    blank = np.full_like(image, 255)
    rows = [[image], [blank], [blank]]
    for g in groups:
        mask = cv2.resize((item["masks"][g].numpy() * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        att = cv2.resize((np.clip(maps[g], 0, 1) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        heat = cv2.applyColorMap(att, cv2.COLORMAP_VIRIDIS)[..., ::-1]
        rows[0].append(np.repeat(mask[..., None], 3, -1))
        rows[1].append(heat)
        rows[2].append((0.45 * image + 0.55 * heat).astype(np.uint8))
    return np.concatenate([np.concatenate(r, 1) for r in rows], 0)


def lora_artifacts(base_dir: Path, adapter_dir: Path, output_dir: Path) -> dict[str, str]:
    """The registered version's ``base`` and ``adapter`` artifacts. MLflow keeps each under its folder's
    name: an adapter folder named like the base's is copied (it is small) to a name of its own."""
    if Path(adapter_dir).name == Path(base_dir).name:
        import shutil

        copy = Path(output_dir) / "package" / "adapter"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(adapter_dir, copy)
        adapter_dir = copy
    return {"base": str(base_dir), "adapter": str(adapter_dir)}


def run_training(profile: TrainingProfile, snapshot, protocol, base_dir: Path, output_dir: Path, tracking, experiment: str,
                 run_name: str, tags: dict[str, str] | None = None, nested: bool = False) -> TrainingRun | None:
    """The tracked run (see the module docstring); None on the processes other than the main one."""
    import mlflow

    from flywheel.tracking import flatten, mlflow_run
    from training.alignment import attention_iou
    from training.data import DaringDataset
    from training.distributed import process_state
    from training.lora import load_trained
    from training.sampling import generate, image_grid
    from training.trainer import train

    if profile.threads:
        torch.set_num_threads(profile.threads)
    s = profile.train
    train_samples = list(snapshot.samples("train"))
    processes = process_state()
    if not processes.is_main_process:  # its share of every step; the trainer waits until the main process saved
        train(s, base_dir, train_samples, protocol, output_dir)
        return None
    held_out = list(snapshot.samples("test", limit=profile.eval_samples))
    run_tags = tracking.dagster_run_tags({"cosmicman.stage": "training", "git.commit": git_commit(),
                                          **snapshot.tracking_tags(), **(tags or {})})
    variant = run_tags.get("cosmicman.variant", run_name)
    with mlflow_run(tracking, experiment, run_name, tags=run_tags, nested=nested, system_metrics=True) as run:
        from flywheel.mlflow_dataset import snapshot_dataset

        mlflow.log_input(snapshot_dataset(snapshot), context="training")
        mlflow.log_params(flatten({"base_model": str(base_dir), "train_images": len(train_samples),
                                   "held_out_images": len(held_out), "processes": processes.num_processes,
                                   **flatten(s.model_dump(mode="json"), "train.")}))
        t0 = time.perf_counter()

        def on_log(step, losses):
            mlflow.log_metrics({"loss_noise": losses.noise, "loss_hola": losses.hola, "lr": losses.lr}, step=step)

        def on_attention(step, base, unet, dataset, store):
            was_training = unet.training
            unet.eval()
            mlflow.log_image(attention_figure(base, unet, dataset, store), key="attention_maps", step=step)
            unet.train(was_training)

        result = train(s, base_dir, train_samples, protocol, output_dir, on_log=on_log, on_attention=on_attention)
        kill_point("training.trained")  # trained and saved, not yet registered
        seconds = time.perf_counter() - t0
        trained = load_trained(result.unet_dir)
        trained.unet.eval()
        height, width = trained.image_size
        prompts = [p for p in s.validation_prompts for _ in profile.validation_seeds]
        seeds = [sd for _ in s.validation_prompts for sd in profile.validation_seeds]
        images = generate(trained, trained.unet, prompts, seeds, height, width, steps=s.validation_steps)
        grid = image_grid(images, len(profile.validation_seeds))
        mlflow.log_image(grid, "validation_samples.png")
        metrics = {"train_seconds": seconds, "steps": result.steps}
        if result.losses:
            metrics.update({"final_loss_noise": result.losses.noise, "final_loss_hola": result.losses.hola})
        if held_out:
            from training.data import DiscretizeSettings

            eval_ds = DaringDataset(held_out, protocol, trained.tokenizer, DiscretizeSettings.for_evaluation(trained),
                                    trained.tokenizer_2)
            iou = attention_iou(trained, trained.unet, eval_ds, s.attention_levels, s.attention_layers)
            metrics.update({f"attention_{k}": v for k, v in iou.items() if k != "groups"})
        mlflow.log_metrics(metrics)
        from training.mlflow_model import LORA_PIPELINE, PIPELINE, log_and_register

        version_tags = {"snapshot.version": snapshot.version, "snapshot.tag": snapshot.tag or "untagged",
                        "snapshot.data_hash": snapshot.data_hash or "unknown", "git.commit": run_tags["git.commit"],
                        "dagster.run_id": run_tags.get("dagster.run_id", "none"), "beta": s.beta,
                        "act_fn": trained.unet.config.act_fn}
        if result.adapter_dir is not None:
            version, model_id = log_and_register(
                LORA_PIPELINE, lora_artifacts(Path(base_dir), result.adapter_dir, output_dir), profile.registered_model,
                variant, {**version_tags, "lora_rank": s.lora_rank}, extra_requirements=("peft",))
        else:
            version, model_id = log_and_register(PIPELINE, {"pipeline": str(result.unet_dir)}, profile.registered_model,
                                                 variant, version_tags)
        return TrainingRun(run.info.run_id, run.info.experiment_id, profile.registered_model, version, metrics, png_bytes(grid), output_dir, snapshot.tag,
                           result.history, model_id)
