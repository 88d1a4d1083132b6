"""The trained pipeline as an MLflow model: a pyfunc that generates images from prompts.

The pipeline directory (diffusers layout) travels as the model's artifact (a LoRA training's:
the base directory and the adapter, ``base`` and ``adapter``), so a registered version is
self-contained: ``mlflow.pyfunc.load_model("models:/<name>@champion")`` and
``predict(pd.DataFrame({"prompt": [...], "seed": [...]}))`` return PNG bytes per row. The
trainings log it from code (:mod:`training.mlflow_models`), not as a pickled instance.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc


class DiffusionPipelineModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from training.base_model import load_base

        self.base = load_base(context.artifacts["pipeline"])

    def predict(self, context, model_input, params=None):
        from flywheel.preview import png_bytes
        from training.sampling import generate

        h, w = self.base.image_size
        steps = int((params or {}).get("steps", 25))
        seeds = model_input["seed"].tolist() if "seed" in model_input else list(range(len(model_input)))
        images = generate(self.base, self.base.unet, model_input["prompt"].tolist(), seeds, h, w, steps=steps)
        return [png_bytes(im) for im in images]


class LoraPipelineModel(DiffusionPipelineModel):
    """The base pipeline with a LoRA adapter (diffusers format) loaded into its UNet: artifacts
    ``base`` (the diffusers directory it was trained on) and ``adapter`` (see :mod:`training.lora`)."""

    def load_context(self, context) -> None:
        from training.lora import load_adapter

        self.base = load_adapter(context.artifacts["base"], context.artifacts["adapter"])


class DualPriorPipelineModel(DiffusionPipelineModel):
    """The base pipeline with the dual-prior LoRA weights and the pose token applied;
    prompts may use the pose token (e.g. "a woman, <sds>")."""

    def load_context(self, context) -> None:
        from training.dual_prior.trainer import load_with_prior

        self.base = load_with_prior(context.artifacts["base"], context.artifacts["prior"])


class KosmosGModel(DiffusionPipelineModel):
    """KOSMOS-G: interleaved prompts (text with ``<image>`` placeholders, and one PNG per placeholder in
    ``images``) through the source model and AlignerNet into the base's frozen UNet. Artifacts ``base`` (the
    diffusers directory the aligner was trained against) and ``kosmos`` (:mod:`training.kosmos.checkpoint`)."""

    def load_context(self, context) -> None:
        from training.base_model import load_base
        from training.kosmos.generate import KosmosGenerator, weights_digest
        from training.kosmos.checkpoint import load_kosmos

        self.base = load_base(context.artifacts["base"])
        kosmos = load_kosmos(context.artifacts["kosmos"])
        if weights_digest(self.base.unet) != kosmos.info["unet_digest"]:
            raise ValueError(f"{context.artifacts['kosmos']}: aligned to another UNet than {context.artifacts['base']}'s")
        self.generator = KosmosGenerator(self.base, kosmos.source, kosmos.aligner,
                                         aligned_null=kosmos.info.get("aligned_null", False))

    def predict(self, context, model_input, params=None):
        import io

        import numpy as np
        from PIL import Image

        from flywheel.preview import png_bytes

        steps = int((params or {}).get("steps", 25))
        seeds = model_input["seed"].tolist() if "seed" in model_input else list(range(len(model_input)))
        images = model_input["images"].tolist() if "images" in model_input else [None] * len(model_input)
        prompts = [(text, [np.asarray(Image.open(io.BytesIO(bytes(b))).convert("RGB")) for b in (row if row is not None else [])])
                   for text, row in zip(model_input["prompt"].tolist(), images)]
        return [png_bytes(im) for im in self.generator.generate(prompts, seeds, steps=steps)]


def signature():
    """What ``predict`` takes and returns: prompts (and optional seeds) in, PNG bytes out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed", required=False)]),
                          outputs=Schema([ColSpec("binary")]), params=ParamSchema([ParamSpec("steps", "long", 25)]))


def kosmos_signature():
    """KOSMOS-G's ``predict``: a prompt with ``<image>`` placeholders, one PNG per placeholder, an optional seed."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    return ModelSignature(inputs=Schema([ColSpec("string", "prompt"), ColSpec(Array("binary"), "images", required=False),
                                         ColSpec("long", "seed", required=False)]),
                          outputs=Schema([ColSpec("binary")]), params=ParamSchema([ParamSpec("steps", "long", 25)]))


def pip_requirements(*extra: str) -> list[str]:
    """The serving environment, pinned to the versions this model was trained with."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "diffusers", "transformers", "safetensors", *extra)]


MODELS_FROM_CODE = Path(__file__).parent / "mlflow_models"
PIPELINE = MODELS_FROM_CODE / "pipeline.py"
DUAL_PRIOR_PIPELINE = MODELS_FROM_CODE / "dual_prior_pipeline.py"
LORA_PIPELINE = MODELS_FROM_CODE / "lora_pipeline.py"
KOSMOS_G = MODELS_FROM_CODE / "kosmos_g.py"


def log_and_register(python_model, artifacts: dict[str, str], registered_model: str, variant: str, version_tags: dict,
                     extra_requirements: tuple[str, ...] = (), model_signature=None):
    """Log the pipeline as this run's MLflow 3 logged model (from code when ``python_model`` is a
    file, with a signature, pinned requirements and the project's code) and register it as a new
    version of ``registered_model`` tagged with its ``variant``; returns (model version, logged model id)."""
    import mlflow

    code = [str(Path(__file__).parents[1] / pkg) for pkg in ("training", "flywheel")] \
        if isinstance(python_model, (str, Path)) else None  # what the code file imports, inside the model
    info = mlflow.pyfunc.log_model(name="pipeline", python_model=str(python_model) if code else python_model,
                                   artifacts=artifacts, code_paths=code,
                                   signature=model_signature or signature(), pip_requirements=pip_requirements(*extra_requirements),
                                   registered_model_name=registered_model, tags={"variant": variant})
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    # the version's link to its logged model (the SQL store leaves ModelVersion.model_id empty)
    for k, v in {"variant": variant, "model_id": info.model_id, **version_tags}.items():
        client.set_model_version_tag(registered_model, version, k, str(v))
    return version, info.model_id
