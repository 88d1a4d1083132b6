"""The diffusion pipeline pyfunc, logged from code (``mlflow.pyfunc.log_model(python_model=<this file>)``)."""

from mlflow.models import set_model

from training.mlflow_model import DiffusionPipelineModel

set_model(DiffusionPipelineModel())
