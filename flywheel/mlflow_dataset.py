"""A CosmicMan-HQ version as an MLflow dataset input: its digest is the DVC data hash and its
source the DVC registry and git tag a consumer fetches it with."""

from __future__ import annotations

from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset

DATASET_PATH = "cosmicman-hq"  # the dataset's path inside the registry


class DvcDatasetSource(DatasetSource):
    """A path in a DVC repository at a git revision: ``dvc get <repo> <path> --rev <rev>``."""

    def __init__(self, repo: str, path: str, rev: str):
        self.repo, self.path, self.rev = repo, path, rev

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self, **kwargs) -> Any:
        raise NotImplementedError(f"fetch it with: dvc get {self.repo} {self.path} --rev {self.rev}")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcDatasetSource:
        raise NotImplementedError("DVC sources are built from a snapshot, not resolved from a string")

    def to_dict(self) -> dict[str, str]:
        return {"repo": self.repo, "path": self.path, "rev": self.rev}

    @classmethod
    def from_dict(cls, source_dict: dict) -> DvcDatasetSource:
        return cls(source_dict["repo"], source_dict["path"], source_dict["rev"])


def snapshot_dataset(snapshot) -> MetaDataset:
    """The MLflow dataset of a fetched snapshot (:class:`flywheel.snapshot.loader.Snapshot`)."""
    name = snapshot.tag or f"{DATASET_PATH}-v{snapshot.version}"
    return MetaDataset(DvcDatasetSource(snapshot.registry or str(snapshot.folder), DATASET_PATH, snapshot.tag or ""),
                       name=name, digest=(snapshot.data_hash or "unknown")[:36])
