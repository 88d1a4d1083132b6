"""The trained pipeline as an MLflow model: a pyfunc that generates images from prompts.

The pipeline directory (diffusers layout) travels as the model's artifact, so a registered
version is self-contained: ``mlflow.pyfunc.load_model("models:/<name>@champion")`` and
``predict(pd.DataFrame({"prompt": [...], "seed": [...]}))`` return PNG bytes per row.
"""

from __future__ import annotations

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


class DualPriorPipelineModel(DiffusionPipelineModel):
    """The base pipeline with the dual-prior LoRA weights and the pose token applied;
    prompts may use the pose token (e.g. "a woman, <sds>")."""

    def load_context(self, context) -> None:
        from training.dual_prior.trainer import load_with_prior

        self.base = load_with_prior(context.artifacts["base"], context.artifacts["prior"])
