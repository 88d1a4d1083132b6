"""MLflow tracking: one place that opens runs against the configured tracking store.

The default store is a SQLite database in the workspace (`mlflow ui --backend-store-uri
sqlite:///workspace/mlflow.db` shows it); production points `mlflow.tracking_uri` at a server.
Parameters are flattened config values; anything named like a secret is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, Field

_SECRET = re.compile(r"(key|token|secret|password|credential)", re.I)


class TrackingSettings(BaseModel):
    tracking_uri: str | None = Field(None, description="default: sqlite:///<workspace>/mlflow.db")
    artifact_root: str | None = Field(None, description="where new experiments keep artifacts; default <workspace>/mlartifacts, "
                                      "or the server's own artifact store when tracking_uri is a server")
    experiment_prefix: str = "cosmicman"
    ui_url: str = Field("http://127.0.0.1:5000", description="the MLflow UI, for links in asset metadata (`make mlflow-ui`)")

    dagster_url: str = Field("http://127.0.0.1:3000", description="the Dagster UI, for links on MLflow runs (`make ui`)")

    def is_server(self) -> bool:
        """A tracking server (it has its own artifact store) rather than a database or folder."""
        return (self.tracking_uri or "").split("://", 1)[0] in ("http", "https", "databricks")

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """A run's page in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str) -> str:
        """A registered model version's page in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"

    def dagster_run_tags(self, tags: Mapping[str, str] | None) -> dict[str, str]:
        """``tags`` plus a link back to the Dagster run, when they name one (``dagster.run_id``)."""
        out = dict(tags or {})
        if out.get("dagster.run_id"):
            out["dagster.run_url"] = f"{self.dagster_url.rstrip('/')}/runs/{out['dagster.run_id']}"
        return out


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat MLflow params; keys that look like secrets are left out."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if _SECRET.search(str(k)) and not str(k).endswith("_env"):
            continue
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


@contextlib.contextmanager
def mlflow_run(tracking: TrackingSettings, experiment: str, run_name: str, tags: Mapping[str, str] | None = None,
               nested: bool = False, system_metrics: bool = False) -> Iterator[Any]:
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking.tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        # a database store would otherwise put artifacts in ./mlruns of whatever directory runs this
        mlflow.create_experiment(experiment, artifact_location=tracking.artifact_root)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {}), nested=nested, log_system_metrics=system_metrics) as run:
        yield run
