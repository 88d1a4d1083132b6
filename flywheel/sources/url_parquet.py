"""LAION-style URL shards: Parquet files of (url, caption, width, height, ...).

Downloads with bounded concurrency through :class:`SafeFetcher`; one raw row per URL with
its status (ok / http_error / timeout / too_large / not_image / blocked / error), as
img2dataset does. Re-running skips URLs already fetched (by URL hash); failed ones are
retried only when asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pyarrow.parquet as pq
from pydantic import BaseModel, Field
from upath import UPath

from flywheel.manifests import to_json
from flywheel.sources.fetch import FetchSettings, SafeFetcher
from flywheel.sources.records import raw_row, record_id, resize_to_max_side
from flywheel.store import ContentStore

log = logging.getLogger(__name__)


class UrlParquetSourceSettings(BaseModel):
    type: Literal["url_parquet"] = "url_parquet"
    name: str
    shards: list[str] = Field(description="Parquet files or glob patterns (local or s3://)")
    url_column: str = "url"
    caption_column: str | None = "caption"
    width_column: str | None = "width"
    height_column: str | None = "height"
    licence_column: str | None = None
    max_items: int | None = Field(None, ge=1, description="per refresh")
    retry_failed: bool = False
    resize_max_side: int | None = Field(None, ge=16, description="re-encode larger images on ingest")
    fetch: FetchSettings = Field(default_factory=FetchSettings)


def read_shards(patterns: Iterable[str]) -> list[dict]:
    rows: list[dict] = []
    for pattern in patterns:
        p = UPath(pattern)
        paths = sorted(p.parent.glob(p.name)) if any(c in p.name for c in "*?[") else [p]
        for path in paths:
            with path.open("rb") as fh:
                rows.extend(pq.read_table(fh).to_pylist())
    return rows


def fetch_to_row(fetcher: SafeFetcher, store: ContentStore, url: str, *, source: str, source_type: str, batch: str,
                 resize_max_side: int | None = None, **fields) -> dict:
    """Download one image into the store and describe the attempt as a raw row."""
    sidecar = dict(fields.pop("sidecar", None) or {})
    result = fetcher.get(url)
    if not result.ok:
        return raw_row(source, source_type, batch, url, result.status, reason=result.reason,
                       sidecar_json=to_json(sidecar) if sidecar else None, **fields)
    data = result.data
    extra = {}
    if resize_max_side:
        resized = resize_to_max_side(data, resize_max_side)
        if resized is not None:
            data, original = resized
            extra = {"original_width": original[0], "original_height": original[1]}
    key = store.put(data)
    sidecar |= extra
    return raw_row(source, source_type, batch, url, "ok", sha256=key, n_bytes=len(data),
                   media_type="image/jpeg" if extra else result.media_type,
                   sidecar_json=to_json(sidecar) if sidecar else None, **fields)


def ingest_url_parquet(cfg: UrlParquetSourceSettings, store: ContentStore, batch: str, previous: Iterable[dict] = (),
                       progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Fetch the shard rows not fetched before (and failed ones when ``retry_failed``)."""
    status_by_id = {r["record_id"]: r["status"] for r in previous}
    todo = []
    for row in read_shards(cfg.shards):
        url = row.get(cfg.url_column)
        if not url:
            continue
        prior = status_by_id.get(record_id(cfg.name, url))
        if prior == "ok" or (prior is not None and not cfg.retry_failed):
            continue
        todo.append(row)
        if cfg.max_items and len(todo) >= cfg.max_items:
            break
    known = {cfg.url_column, cfg.caption_column, cfg.width_column, cfg.height_column, cfg.licence_column}

    def one(row: dict) -> dict:
        passthrough = {k: v for k, v in row.items() if k not in known and v is not None}
        return fetch_to_row(
            fetcher, store, row[cfg.url_column], source=cfg.name, source_type="url_parquet", batch=batch,
            resize_max_side=cfg.resize_max_side,
            caption=row.get(cfg.caption_column) if cfg.caption_column else None,
            width=_int(row.get(cfg.width_column)) if cfg.width_column else None,
            height=_int(row.get(cfg.height_column)) if cfg.height_column else None,
            licence=row.get(cfg.licence_column) if cfg.licence_column else None,
            sidecar=passthrough,
        )

    out: list[dict] = []
    with SafeFetcher(cfg.fetch) as fetcher, ThreadPoolExecutor(cfg.fetch.concurrency) as pool:
        for r in pool.map(one, todo):
            out.append(r)
            if progress:
                progress(len(out), len(todo))
    return out


def _int(v) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None
