"""The KOSMOS-G pyfunc (interleaved prompts into the frozen base), logged from code."""

from mlflow.models import set_model

from training.mlflow_model import KosmosGModel

set_model(KosmosGModel())
