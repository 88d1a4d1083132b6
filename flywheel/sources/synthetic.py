"""Ingest the synthetic source: render samples into the store, one raw record each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pyarrow as pa

from flywheel.faults import kill_point
from flywheel.manifests import RAW_RECORDS, to_json
from flywheel.parallel import process_pool
from flywheel.protocol import Protocol
from flywheel.sources.records import record_id, utc_now
from flywheel.store import ContentStore
from flywheel.synthetic.source import SyntheticConfig, encode_parsing, render_sample

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    table: pa.Table
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.table.num_rows / self.seconds if self.seconds > 0 else float("nan")


def _ingest_one(index: int, *, config: SyntheticConfig, protocol: Protocol, store: ContentStore,
                source: str, batch: str) -> dict:
    sample = render_sample(config, protocol, index)
    key = store.put(sample.data)
    parsing_key = store.put(encode_parsing(sample.parsing)) if sample.parsing is not None else None
    return {
        "record_id": record_id(source, sample.item),
        "source": source,
        "source_type": "synthetic",
        "batch": batch,
        "item": sample.item,
        "status": "ok",
        "reason": None,
        "sha256": key,
        "n_bytes": len(sample.data),
        "media_type": sample.media_type,
        "width": sample.width,
        "height": sample.height,
        "caption": None,
        "licence": "CC0-1.0 (synthetic)",
        "attribution": "cosmicman synthetic renderer",
        "sidecar_parsing_sha256": parsing_key,
        "sidecar_keypoints": sample.keypoints.reshape(-1).tolist() if sample.keypoints is not None else None,
        "sidecar_json": to_json(sample.truth),
        "fetched_at": utc_now(),
    }


def ingest_synthetic(config: SyntheticConfig, protocol: Protocol, store: ContentStore, *, source: str = "synthetic",
                     batch: str = "0", start: int = 0, count: int = 100, workers: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> IngestResult:
    """Render samples ``start .. start+count-1`` into ``store``; returns their raw records."""
    t0 = time.perf_counter()
    fn = partial(_ingest_one, config=config, protocol=protocol, store=store, source=source, batch=batch)
    indices = range(start, start + count)
    rows: list[dict] = []
    if workers > 1 and count > 1:
        with process_pool(workers) as pool:
            for row in pool.map(fn, indices, chunksize=max(1, min(64, count // (workers * 4)))):
                rows.append(row)
                kill_point("source.item")
                if progress:
                    progress(len(rows), count)
    else:
        for i in indices:
            rows.append(fn(i))
            kill_point("source.item")
            if progress:
                progress(len(rows), count)
    seconds = time.perf_counter() - t0
    log.info("synthetic: %d samples in %.1fs (%.1f img/s)", count, seconds, count / seconds if seconds else 0)
    return IngestResult(RAW_RECORDS.table(rows), seconds)
