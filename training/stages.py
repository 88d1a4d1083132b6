"""Training stages on the project's settings: what the Dagster assets and the CLI call."""

from __future__ import annotations

from pathlib import Path

from flywheel.protocol import load_protocol
from flywheel.settings import Settings


def base_model_dir(settings: Settings) -> Path:
    """The configured SD directory, else the embedded tiny model (created on first use)."""
    if settings.training.base_model_dir is not None:
        return settings.training.base_model_dir
    from training.base_model import create_tiny_base

    folder = settings.workspace / "models" / "tiny-base"
    if not (folder / "model_index.json").exists():
        tmp = folder.with_name(folder.name + ".partial")
        create_tiny_base(tmp, load_protocol(settings.protocol_path), seed=settings.training.train.seed)
        tmp.rename(folder)
    return folder


def training_snapshot(settings: Settings, version: int | None = None):
    """The pinned (or latest) CosmicMan-HQ version, fetched with dvc get into the cache."""
    from flywheel.snapshot.loader import fetch_snapshot
    from flywheel.stages import snapshot_registry

    registry = snapshot_registry(settings)
    version = version or settings.training.snapshot_version or registry.latest()
    if version is None:
        raise LookupError(f"{registry.path}: no CosmicMan-HQ version published yet (publish a snapshot first)")
    return fetch_snapshot(str(registry.path), version, settings.snapshot.cache_dir, settings.dvc_command(), registry.dataset)


def train_variant(settings: Settings, name: str, beta: float | None = None, act_fn: str | None = None,
                  tags: dict[str, str] | None = None, nested: bool = False, snapshot_version: int | None = None):
    """One training run named ``name`` (its outputs under workspace/training/<name>/<snapshot tag>)."""
    from training.run import run_training

    profile = settings.training.model_copy(deep=True)
    updates = {k: v for k, v in {"beta": beta, "act_fn": act_fn}.items() if v is not None}
    profile.train = profile.train.model_copy(update=updates)
    snapshot = training_snapshot(settings, snapshot_version)
    out = settings.workspace / "training" / name / (snapshot.tag or f"v{snapshot.version}")
    return run_training(profile, snapshot, load_protocol(settings.protocol_path), base_model_dir(settings), out,
                        settings.tracking, f"{settings.tracking.experiment_prefix}-training", name,
                        tags={"cosmicman.variant": name, **(tags or {})}, nested=nested)


def activation_sweep(settings: Settings, tags: dict[str, str] | None = None) -> list:
    """CosmicMan Prime: one Daring run per activation, same data and seed, under one parent run."""
    import mlflow

    from flywheel.tracking import mlflow_run

    with mlflow_run(settings.tracking, f"{settings.tracking.experiment_prefix}-training", "activation-sweep",
                    tags={"cosmicman.stage": "activation_sweep", **(tags or {})}):
        runs = [train_variant(settings, f"daring-{act}", act_fn=act, tags=tags, nested=True)
                for act in settings.training.activations]
        mlflow.log_metrics({f"{act}.attention_iou": r.metrics.get("attention_iou", float("nan"))
                            for act, r in zip(settings.training.activations, runs)})
    return runs


def dual_prior_base(settings: Settings, snapshot_tag: str) -> Path:
    """The model the dual prior adapts: ``dual_prior.base_variant``'s final model on this snapshot, else the base."""
    variant = settings.training.dual_prior.base_variant
    if not variant:
        return base_model_dir(settings)
    base = settings.workspace / "training" / variant / snapshot_tag / "final"
    if not (base / "model_index.json").exists():
        raise FileNotFoundError(f"{base}: dual_prior.base_variant {variant!r} has no trained model for {snapshot_tag} yet "
                                f"(train it first: cosmicman train --name {variant})")
    return base


def train_dual_prior(settings: Settings, tags: dict[str, str] | None = None, snapshot_version: int | None = None):
    """Both dual-prior stages on a CosmicMan-HQ version, under one parent MLflow run."""
    from training.dual_prior.run import run_dual_prior

    snapshot = training_snapshot(settings, snapshot_version)
    tag = snapshot.tag or f"v{snapshot.version}"
    out = settings.workspace / "training" / "dual-prior" / tag
    base = dual_prior_base(settings, tag)
    return run_dual_prior(settings.training, snapshot, load_protocol(settings.protocol_path), base, out,
                          settings.tracking, f"{settings.tracking.experiment_prefix}-training", tags)
