"""A CosmicMan-HQ version as an MLflow dataset input: its digest is the DVC data hash and its
source the DVC registry and git tag a consumer fetches it with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset

DATASET_PATH = "cosmicman-hq"  # the dataset's path inside the registry
URI_PREFIX = "dvc://"


class DvcDatasetSource(DatasetSource):
    """A path in a DVC repository at a git revision: ``dvc get <repo> <path> --rev <rev>``."""

    def __init__(self, repo: str, path: str, rev: str):
        self.repo, self.path, self.rev = repo, path, rev

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self, dst_path: str | None = None) -> str:
        """``dvc get`` the dataset into ``dst_path`` (default: a new temporary folder); returns the folder."""
        import tempfile

        from flywheel.settings import load_settings
        from flywheel.snapshot.registry import get_version

        out = Path(dst_path) if dst_path else Path(tempfile.mkdtemp(prefix="cosmicman-hq-")) / self.rev
        return str(get_version(self.repo, self.rev, out, load_settings().dvc_command(), self.path))

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith(URI_PREFIX)

    @classmethod
    def _resolve(cls, raw_source: str) -> DvcDatasetSource:
        """``dvc://<repo>?path=<path>&rev=<rev>``"""
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(raw_source)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        return cls(parts.netloc + parts.path, query.get("path", DATASET_PATH), query.get("rev", ""))

    @property
    def uri(self) -> str:
        return f"{URI_PREFIX}{self.repo}?path={self.path}&rev={self.rev}"

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
