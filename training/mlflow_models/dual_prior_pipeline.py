"""The dual-prior pipeline pyfunc (base + LoRA + pose token), logged from code."""

from mlflow.models import set_model

from training.mlflow_model import DualPriorPipelineModel

set_model(DualPriorPipelineModel())
