"""Settings of the CosmicMan-HQ snapshot and its registry (pydantic only: cheap to import)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class SnapshotSettings(BaseModel):
    name: str = Field("cosmicman-hq", pattern=r"^[a-z0-9][a-z0-9-]*$", description="dataset path and tag prefix")
    registry_path: Path | None = Field(None, description="the registry's git repository; default <workspace>/dvc-registry")
    remote_url: str | None = Field(None, description="DVC remote: a directory (default <workspace>/dvc-remote) or s3://...")
    remote_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, ...)")
    shard_size: int = Field(2000, ge=1, description="samples per tar shard")
    test_fraction: float = Field(0.05, gt=0, lt=1)
    split_tolerance: float = Field(0.03, ge=0, description="allowed deviation of the test share")
    cache_dir: Path | None = Field(None, description="where consumers keep fetched versions; default <workspace>/snapshots")
