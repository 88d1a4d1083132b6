"""Pipeline stages as plain functions: the one implementation that Dagster assets, the
command-line interface and dvc.yaml stages all call."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from flywheel.manifests import RAW_RECORDS, write_manifest
from flywheel.protocol import load_protocol
from flywheel.settings import Settings
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.store import ContentStore


@dataclass
class StageResult:
    table: pa.Table
    manifest: Path
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.table.num_rows / self.seconds if self.seconds > 0 else float("nan")


def raw_manifest_path(settings: Settings, source: str, batch: str) -> Path:
    return settings.manifests_dir / "raw" / source / f"{batch}.parquet"


def source_synthetic(settings: Settings, batch: str = "batch-000000", start: int = 0, count: int | None = None,
                     workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> StageResult:
    """Render a batch of the synthetic source into the store and write its raw manifest."""
    cfg = settings.synthetic
    result = ingest_synthetic(
        cfg, load_protocol(settings.protocol_path), ContentStore(settings.store_url), source=cfg.name, batch=batch,
        start=start, count=cfg.count if count is None else count, workers=workers or min(2, os.cpu_count() or 1),
        progress=progress,
    )
    path = raw_manifest_path(settings, cfg.name, batch)
    write_manifest(result.table, path, RAW_RECORDS)
    return StageResult(result.table, path, result.seconds)
