"""The models an evaluation compares: the base model and every trained variant's newest version.

Trained versions come from the MLflow model registry (any registered model the training
stages write), newest version per variant among those trained on the evaluated snapshot,
and are loaded from the registered artifacts themselves, so what is evaluated is exactly what
a consumer of ``models:/<name>/<version>`` gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from training.base_model import BaseModel, load_base


@dataclass
class ModelUnderTest:
    label: str  # "base" or the training variant (plain-finetune, daring, dual-prior, daring-gelu, ...)
    load: Callable[[], BaseModel]
    registered_model: str | None = None
    version: str | None = None
    run_id: str | None = None
    model_id: str | None = None  # the version's MLflow 3 logged model

    @property
    def key(self) -> str:
        return f"{self.registered_model}-v{self.version}" if self.version else self.label


def base_model(folder: Path) -> ModelUnderTest:
    return ModelUnderTest("base", lambda: load_base(folder))


def load_registered(name: str, version: str, cache: Path) -> BaseModel:
    """A registered pipeline version from its artifacts (diffusers pipeline, base + LoRA adapter, or base + dual prior)."""
    import mlflow

    folder = cache / f"{name}-v{version}"
    if not (folder / "MLmodel").exists():
        tmp = folder.with_name(folder.name + ".partial")
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp))
        tmp.rename(folder)
    artifacts = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"].get("artifacts", {})
    paths = {k: folder / v["path"] for k, v in artifacts.items()}
    if "prior" in paths:
        from training.dual_prior.trainer import load_with_prior

        return load_with_prior(paths["base"], paths["prior"])
    if "adapter" in paths:
        from training.lora import load_adapter

        return load_adapter(paths["base"], paths["adapter"])
    if "pipeline" not in paths:
        raise ValueError(f"models:/{name}/{version}: no 'pipeline', 'adapter' or 'prior' artifact (has {sorted(paths)})")
    return load_base(paths["pipeline"])


def trained_versions(client, registered_models: Iterable[str], snapshot_tag: str | None, cache: Path) -> list[ModelUnderTest]:
    """Newest version per variant of each registered model, trained on ``snapshot_tag``."""
    newest: dict[str, ModelUnderTest] = {}
    for name in registered_models:
        if not client.search_registered_models(filter_string=f"name='{name}'"):
            continue
        for mv in client.search_model_versions(f"name='{name}'"):
            if snapshot_tag and mv.tags.get("snapshot.tag") != snapshot_tag:
                continue
            run = client.get_run(mv.run_id) if mv.run_id else None
            label = mv.tags.get("variant") or (run.data.tags.get("cosmicman.variant") if run else None) \
                or name.removeprefix("cosmicman-")
            known = newest.get(label)
            if known is None or int(mv.version) > int(known.version):
                newest[label] = ModelUnderTest(label, lambda n=name, v=mv.version: load_registered(n, v, cache),
                                               name, str(mv.version), mv.run_id, getattr(mv, "model_id", None) or mv.tags.get("model_id"))
    return sorted(newest.values(), key=lambda m: m.label)
