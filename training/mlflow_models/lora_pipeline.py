"""The LoRA pipeline pyfunc (base + adapter in diffusers' LoRA format), logged from code."""

from mlflow.models import set_model

from training.mlflow_model import LoraPipelineModel

set_model(LoraPipelineModel())
