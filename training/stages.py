"""Training stages on the project's settings: what the Dagster assets and the CLI call."""

from __future__ import annotations

from pathlib import Path

from flywheel.protocol import load_protocol
from flywheel.settings import PROJECT_ROOT, Settings

EMBEDDED_BASE_DIR = PROJECT_ROOT / "models" / "embedded-base"


def base_model_dir(settings: Settings) -> Path:
    """The configured SD directory, else the embedded base shipped in ``models/embedded-base``."""
    if settings.training.base_model_dir is not None:
        return settings.training.base_model_dir
    if not (EMBEDDED_BASE_DIR / "model_index.json").exists():
        raise FileNotFoundError(f"{EMBEDDED_BASE_DIR}: the embedded base model is missing (it ships with the "
                                f"repository; `cosmicman pretrain-base` rebuilds it)")
    return EMBEDDED_BASE_DIR


def pretrain_embedded_base(settings: Settings, out: Path = EMBEDDED_BASE_DIR, work_dir: Path | None = None,
                           tags: dict[str, str] | None = None, from_pipeline: Path | None = None):
    """``pretrain-base``: train (or continue) the embedded base under one MLflow run; write it to ``out``
    with its model card and checksums. ``from_pipeline``: continue from that finished pipeline's weights
    where the work folder has no checkpoint (a fresh clone continuing the committed base)."""
    import json

    import mlflow

    from flywheel.checksums import write_checksums
    from flywheel.preview import png_bytes
    from flywheel.tracking import flatten, mlflow_run
    from training.pretrain.card import notes_of, write_card
    from training.pretrain.run import pretrain_base
    from training.run import git_commit

    s = settings.training.pretrain
    work_dir = work_dir or settings.workspace / "pretrain"
    card = Path(out) / "README.md"  # its run notes outlive the export, which replaces the folder
    notes = notes_of(card.read_text()) if card.exists() else ""
    if from_pipeline is not None:
        from training.pretrain.continue_from import seed_checkpoints

        seed_checkpoints(Path(from_pipeline), work_dir, s)
    with mlflow_run(settings.tracking, f"{settings.tracking.experiment_prefix}-pretraining", "pretrain-base",
                    tags={"cosmicman.stage": "pretrain_base", "git_commit": git_commit(), **(tags or {})}) as run:
        mlflow.log_params(flatten(s.model_dump(mode="json")))
        mlflow.log_dict(s.corpus.model_dump(mode="json"), "corpus_recipe.json")
        result = pretrain_base(
            s, work_dir, Path(out), settings.protocol_path,
            on_log=lambda stage, step, metrics: mlflow.log_metrics(metrics, step=step),
            on_grid=lambda step, grid: mlflow.log_image(grid, f"samples/step-{step:06d}.png"))
        mlflow.log_metrics({f"seconds_{k}": v for k, v in result.total_seconds.items()})
        mlflow.log_metric("vae_scaling_factor", result.scaling_factor)
        settings_json = json.loads((Path(out) / "pretrain_settings.json").read_text())["settings"]
        write_card(Path(out), settings_json, result.total_seconds, result.scaling_factor, notes=notes)
        (Path(out) / "samples.png").write_bytes(png_bytes(result.grid))
        write_checksums(Path(out))
        mlflow.log_artifact(str(Path(out) / "README.md"))
        result.run_id = run.info.run_id
    return result


def training_snapshot(settings: Settings, version: int | None = None):
    """The pinned (or latest) CosmicMan-HQ version, fetched with dvc get into the cache."""
    from flywheel.snapshot.loader import fetch_snapshot
    from flywheel.stages import snapshot_registry

    registry = snapshot_registry(settings)
    version = version or settings.training.snapshot_version or registry.latest()
    if version is None:
        raise LookupError(f"{registry.path}: no CosmicMan-HQ version published yet (publish a snapshot first)")
    return fetch_snapshot(str(registry.path), version, settings.snapshot.cache_dir, settings.dvc_command(), registry.dataset)


class FallbackParsingError(ValueError):
    """A snapshot whose parsing maps are mostly geometry fallbacks would supervise attention with them."""


def refuse_fallback_parsing(snapshot, limit: float, purpose: str) -> None:
    """Raise when the train split's share of fallback parsing maps exceeds ``limit`` (see the card)."""
    share = snapshot.fallback_parsing_share("train")
    if share is not None and share > limit:
        raise FallbackParsingError(
            f"{snapshot.tag or snapshot.folder}: {share:.1%} of the training parsing maps are geometry fallbacks "
            f"(no parsing weights), above training.max_fallback_parsing {limit:.1%}: {purpose} would learn their "
            "coarse masks. Configure segformer_dir (a local parsing checkpoint) and re-annotate, or raise the limit")


def train_variant(settings: Settings, name: str, beta: float | None = None, act_fn: str | None = None,
                  tags: dict[str, str] | None = None, nested: bool = False, snapshot_version: int | None = None):
    """One training run named ``name`` (its outputs under workspace/training/<name>/<snapshot tag>)."""
    from training.run import run_training

    profile = settings.training.model_copy(deep=True)
    updates = {k: v for k, v in {"beta": beta, "act_fn": act_fn}.items() if v is not None}
    profile.train = profile.train.model_copy(update=updates)
    snapshot = training_snapshot(settings, snapshot_version)
    if profile.train.beta > 0:  # HOLA's masks come from the parsing maps; the plain fine-tune does not read them
        refuse_fallback_parsing(snapshot, profile.max_fallback_parsing, f"HOLA training ({name})")
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
    from training.lora import is_adapter

    if is_adapter(base):  # the dual prior adds its own LoRA: it needs a whole pipeline to start from
        raise ValueError(f"{base}: dual_prior.base_variant {variant!r} was trained as a LoRA adapter; train it with "
                         "train.lora_merge: true (a merged pipeline) to adapt it with the dual prior")
    if not (base / "model_index.json").exists():
        raise FileNotFoundError(f"{base}: dual_prior.base_variant {variant!r} has no trained model for {snapshot_tag} yet "
                                f"(train it first: cosmicman train --name {variant})")
    return base


def train_dual_prior(settings: Settings, tags: dict[str, str] | None = None, snapshot_version: int | None = None):
    """Both dual-prior stages on a CosmicMan-HQ version, under one parent MLflow run."""
    from training.dual_prior.run import run_dual_prior

    snapshot = training_snapshot(settings, snapshot_version)
    refuse_fallback_parsing(snapshot, settings.training.max_fallback_parsing, "the dual prior's binding")
    tag = snapshot.tag or f"v{snapshot.version}"
    out = settings.workspace / "training" / "dual-prior" / tag
    base = dual_prior_base(settings, tag)
    return run_dual_prior(settings.training, snapshot, load_protocol(settings.protocol_path), base, out,
                          settings.tracking, f"{settings.tracking.experiment_prefix}-training", tags)


def build_kosmos_pairs(settings: Settings, version: int | None = None) -> tuple[Path, dict]:
    """``kosmos_pairs``: garment crops and their references from a CosmicMan-HQ version (the pinned or latest),
    written once per version to ``<workspace>/kosmos/pairs-v<N>.parquet``; returns the path and its counts."""
    from collections import Counter

    from training.kosmos.pairs import build_pairs, read_pairs, write_pairs

    snapshot = training_snapshot(settings, version)
    path = settings.workspace / "kosmos" / f"pairs-v{snapshot.version}.parquet"
    if path.exists():
        rows = read_pairs(path)
    else:
        protocol = load_protocol(settings.protocol_path)
        rows = [r for split in ("train", "test") for r in build_pairs(snapshot.samples(split), protocol)]
        write_pairs(rows, path)
    stats = {"rows": len(rows), "samples": len({r["key"] for r in rows}), "version": snapshot.version,
             "tag": snapshot.tag, "with_reference": sum(r["reference_key"] is not None for r in rows),
             "parts": dict(Counter(r["part"] for r in rows))}
    return path, stats


def train_kosmos_g(settings: Settings, tags: dict[str, str] | None = None, snapshot_version: int | None = None):
    """KOSMOS-G's three stages on a CosmicMan-HQ version's kosmos_pairs (built if missing), under one parent MLflow
    run, each stage a registered version (:mod:`training.kosmos.run`); outputs under workspace/kosmos/<tag>/."""
    from evaluation.stages import load_truth_judge
    from training.base_model import load_base
    from training.kosmos.instruct import examples_from_pairs
    from training.kosmos.pairs import read_pairs
    from training.kosmos.run import held_out_garments, run_kosmos_g

    s = settings.training.kosmos
    snapshot = training_snapshot(settings, snapshot_version)
    path, _ = build_kosmos_pairs(settings, snapshot.version)
    rows = read_pairs(path)
    protocol = load_protocol(settings.protocol_path)
    base_dir = base_model_dir(settings)
    size = load_base(base_dir).image_size
    examples = examples_from_pairs(snapshot.samples("train"), rows, size)
    judge, _ = load_truth_judge(settings, protocol)
    clip_dir = s.clip_dir or PROJECT_ROOT / "models" / "embedded-base-clip"
    tag = snapshot.tag or f"v{snapshot.version}"
    return run_kosmos_g(s, base_dir, clip_dir, examples, held_out_garments(rows, s.subject_prompts), protocol,
                        settings.workspace / "kosmos" / tag, settings.tracking,
                        f"{settings.tracking.experiment_prefix}-training", snapshot=snapshot, judge=judge, tags=tags)
