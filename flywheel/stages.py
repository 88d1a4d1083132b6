"""Pipeline stages as plain functions: the one implementation that Dagster assets, the
command-line interface and dvc.yaml stages all call."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from flywheel.filters.chain import FilterRun, run_filter
from flywheel.manifests import FILTERED_POOL, RAW_RECORDS, ManifestError, read_manifest, write_manifest
from flywheel.protocol import load_protocol
from flywheel.settings import Settings
from flywheel.sources.folder import FolderSourceSettings, ingest_folder
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.sources.url_parquet import UrlParquetSourceSettings, ingest_url_parquet
from flywheel.sources.web_api import Cursor, WebApiSourceSettings, ingest_web_api
from flywheel.store import ContentStore

Progress = Callable[[int, int], None]
_BATCH_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class StageResult:
    table: pa.Table
    manifest: Path
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.table.num_rows / self.seconds if self.seconds > 0 else float("nan")


# ---- sourcing ------------------------------------------------------------------------------


def raw_manifest_path(settings: Settings, source: str, batch: str) -> Path:
    if not _BATCH_RE.match(batch) or not _BATCH_RE.match(source):
        raise ValueError(f"source {source!r} / batch {batch!r}: only letters, digits, '.', '_' and '-' are allowed")
    return settings.manifests_dir / "raw" / source / f"{batch}.parquet"


def raw_batches(settings: Settings, source: str) -> list[Path]:
    """A source's batch manifests, oldest first (batch names sort by time)."""
    folder = settings.manifests_dir / "raw" / source
    return sorted(folder.glob("*.parquet")) if folder.exists() else []


def previous_records(settings: Settings, source: str, exclude_batch: str | None = None) -> list[dict]:
    rows: list[dict] = []
    for path in raw_batches(settings, source):
        if path.stem != exclude_batch:
            rows.extend(read_manifest(path, RAW_RECORDS).to_pylist())
    return rows


def source_batch(settings: Settings, source: str, batch: str, workers: int | None = None,
                 progress: Progress | None = None) -> StageResult:
    """Fetch one refresh batch of one source into the store and write its raw manifest.

    Re-running the same batch redoes it (the store skips bytes it already has); other
    batches' items are skipped, so each refresh brings only new candidates."""
    import time

    cfg = settings.source(source)
    store = ContentStore(settings.store_url)
    path = raw_manifest_path(settings, source, batch)
    previous = previous_records(settings, source, exclude_batch=batch)
    t0 = time.perf_counter()
    cursor_state = None
    if cfg.type == "synthetic":
        done = {r["item"] for r in previous}
        start = len(done)  # batches render consecutive index ranges
        table = ingest_synthetic(cfg, load_protocol(settings.protocol_path), store, source=cfg.name, batch=batch,
                                 start=start, count=cfg.count, workers=workers or min(2, os.cpu_count() or 1),
                                 progress=progress).table
    elif isinstance(cfg, FolderSourceSettings):
        table = RAW_RECORDS.table(ingest_folder(cfg, store, batch, previous, progress))
    elif isinstance(cfg, UrlParquetSourceSettings):
        table = RAW_RECORDS.table(ingest_url_parquet(cfg, store, batch, previous, progress))
    elif isinstance(cfg, WebApiSourceSettings):
        cursor = Cursor(settings.state_dir / f"{cfg.name}.cursor.json")
        rows, cursor_state = ingest_web_api(cfg, store, batch, cursor, progress)
        table = RAW_RECORDS.table(rows)
    else:  # pragma: no cover - settings validation rules this out
        raise ValueError(f"unknown source type {cfg.type!r}")
    write_manifest(table, path, RAW_RECORDS)
    if cursor_state is not None:  # only after the batch is safely recorded
        cursor.save(cursor_state)
    return StageResult(table, path, time.perf_counter() - t0)


def source_synthetic(settings: Settings, batch: str = "batch-000000", start: int | None = None, count: int | None = None,
                     workers: int | None = None, progress: Progress | None = None) -> StageResult:
    """The synthetic source alone (CLI and benchmarks): explicit index range."""
    import time

    cfg = settings.synthetic
    t0 = time.perf_counter()
    if start is None:
        start = len({r["item"] for r in previous_records(settings, cfg.name, exclude_batch=batch)})
    result = ingest_synthetic(cfg, load_protocol(settings.protocol_path), ContentStore(settings.store_url), source=cfg.name,
                              batch=batch, start=start, count=cfg.count if count is None else count,
                              workers=workers or min(2, os.cpu_count() or 1), progress=progress)
    path = raw_manifest_path(settings, cfg.name, batch)
    write_manifest(result.table, path, RAW_RECORDS)
    return StageResult(result.table, path, time.perf_counter() - t0)


def all_raw_records(settings: Settings) -> pa.Table:
    """Every raw record of every source, in source then batch order (the pool order)."""
    tables = [read_manifest(p, RAW_RECORDS) for s in settings.all_sources() for p in raw_batches(settings, s.name)]
    return pa.concat_tables(tables) if tables else RAW_RECORDS.table([])


# ---- filtering ------------------------------------------------------------------------------


def filtered_pool_path(settings: Settings) -> Path:
    return settings.manifests_dir / "filtered_pool.parquet"


def read_filtered_pool(settings: Settings) -> pa.Table | None:
    try:
        return read_manifest(filtered_pool_path(settings), FILTERED_POOL)
    except ManifestError:
        return None


def filter_pool(settings: Settings, workers: int | None = None, progress: Progress | None = None) -> tuple[StageResult, FilterRun]:
    """Filter every fetched raw record; analyses of images seen before are reused."""
    raw = all_raw_records(settings)
    run = run_filter(raw, ContentStore(settings.store_url), settings.filter, previous=read_filtered_pool(settings),
                     workers=workers, progress=progress)
    path = write_manifest(run.table, filtered_pool_path(settings), FILTERED_POOL)
    return StageResult(run.table, Path(str(path)), run.seconds, run.notes), run
