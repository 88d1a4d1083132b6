"""Asset metadata the Dagster UI can use: typed tables, row counts, content data versions."""

import hashlib
import json
from collections.abc import Iterable, Sequence

import dagster as dg

ROW_COUNT = "dagster/row_count"  # the UI's row count, shown on the asset and charted over materializations
DATA_VERSION_TAG = "dagster/data_version"  # the tag a materialization's data version is stored under


def data_version_of(event: dg.EventLogEntry | None) -> str:
    """The data version of a materialization event ('' when there is none)."""
    m = event.asset_materialization if event is not None else None
    return (m.tags or {}).get(DATA_VERSION_TAG, "") if m is not None else ""


def table(rows: Iterable[Sequence], columns: Sequence[tuple[str, str]]) -> dg.TableMetadataValue:
    """``MetadataValue.table`` with its schema; ``columns``: (name, type) with type one of
    string, int, float, bool."""
    names = [n for n, _ in columns]
    return dg.MetadataValue.table(
        records=[dg.TableRecord(dict(zip(names, (v if v is None or isinstance(v, (int, float, bool)) else str(v)
                                                  for v in row)))) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in columns]))


def content_version(rows: Iterable[dict], keys: Sequence[str]) -> dg.DataVersion:
    """A data version from the content that matters downstream (``keys`` of every row, order-free):
    re-materializing with the same content gives the same version, so automation stops there."""
    lines = sorted(json.dumps([r.get(k) for k in keys], sort_keys=True, default=str) for r in rows)
    return dg.DataVersion(hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16])
