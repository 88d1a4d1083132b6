"""Parquet manifests with explicit, versioned schemas.

Every stage writes one manifest; its schema name and version travel in the Parquet
file's metadata and are checked on read, so a stage never silently reads a file
written for another stage or an older layout. Writes are atomic: a crash leaves either
the previous manifest or the new one, never a half-written file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from flywheel.faults import kill_point

META_NAME = b"cosmicman.schema"
META_VERSION = b"cosmicman.schema_version"


class ManifestError(ValueError):
    """A manifest is missing, unreadable or of the wrong schema."""


@dataclass(frozen=True)
class ManifestSchema:
    name: str
    version: int
    schema: pa.Schema
    doc: str
    older: tuple[int, ...] = ()  # earlier versions readable as this one: their missing columns read as nulls

    def with_metadata(self) -> pa.Schema:
        return self.schema.with_metadata({META_NAME: self.name.encode(), META_VERSION: str(self.version).encode()})

    def table(self, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
        """Build a table from row dicts; unknown keys are an error, missing ones are null."""
        rows = list(rows)
        names = set(self.schema.names)
        for i, row in enumerate(rows):
            extra = set(row) - names
            if extra:
                raise ManifestError(f"{self.name} row {i}: unknown column(s) {sorted(extra)}")
        cols = {f.name: [row.get(f.name) for row in rows] for f in self.schema}
        return pa.table(cols, schema=self.with_metadata())


_BOX = pa.list_(pa.float32())
_CAPTION_GROUP = pa.struct([("part", pa.string()), ("text", pa.string()), ("class_ids", pa.list_(pa.int16()))])

RAW_RECORDS = ManifestSchema(
    "raw_records", 1,
    pa.schema([
        pa.field("record_id", pa.string(), nullable=False),  # sha256 of source + item: stable across refreshes
        pa.field("source", pa.string(), nullable=False),  # configured source name
        pa.field("source_type", pa.string(), nullable=False),  # synthetic / folder / url_parquet / web_api
        pa.field("batch", pa.string(), nullable=False),  # refresh batch that fetched it
        pa.field("item", pa.string(), nullable=False),  # source locator: index, path or URL
        pa.field("status", pa.string(), nullable=False),  # ok / http_error / timeout / too_large / not_image / blocked / error / skipped / refused
        pa.field("reason", pa.string()),  # why, when status is not ok
        pa.field("sha256", pa.string()),  # content key in the store
        pa.field("n_bytes", pa.int64()),
        pa.field("media_type", pa.string()),
        pa.field("width", pa.int32()),  # as declared by the source (decoding comes later)
        pa.field("height", pa.int32()),
        pa.field("caption", pa.string()),
        pa.field("licence", pa.string()),
        pa.field("attribution", pa.string()),
        pa.field("sidecar_parsing_sha256", pa.string()),  # parsing map PNG shipped with the image
        pa.field("sidecar_keypoints", pa.list_(pa.float32())),  # COCO-17 x, y, v flattened
        pa.field("sidecar_json", pa.string()),  # every other side-car field, verbatim (ground truth for synthetic)
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
    ]),
    "One row per candidate a source offered, failures included.",
)

FILTERED_POOL = ManifestSchema(
    "filtered_pool", 1,
    pa.schema([
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("verdict", pa.string(), nullable=False),  # keep / reject / error
        pa.field("reasons", pa.list_(pa.string())),  # every failed step, in order
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("phash", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("n_persons", pa.int16()),
        pa.field("person_box", _BOX),
        pa.field("face_box", _BOX),
        pa.field("face_size", pa.float32()),
        pa.field("quality", pa.float32()),  # global no-reference quality, higher is better
        pa.field("quality_metric", pa.string()),
        pa.field("face_quality", pa.float32()),
        pa.field("fake_score", pa.float32()),
        pa.field("scores_json", pa.string()),  # every step's raw score, by step name
    ]),
    "One row per raw record that reached the filter, with every step's score and verdict.",
)

ANNOTATIONS = ManifestSchema(
    "annotations", 1,
    pa.schema([
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("parsing_sha256", pa.string()),
        pa.field("parsing_source", pa.string()),  # source / segformer / fallback
        pa.field("answers", pa.map_(pa.string(), pa.string())),
        pa.field("confidences", pa.map_(pa.string(), pa.float32())),
        pa.field("answer_origin", pa.map_(pa.string(), pa.string())),  # ai / human, per category
        pa.field("caption_groups", pa.list_(_CAPTION_GROUP)),
        pa.field("caption", pa.string()),
        pa.field("annotator_version", pa.string()),
        pa.field("iteration", pa.int32()),
    ]),
    "One row per kept image: protocol answers, their origin, the parsing map and grouped captions.",
)

SNAPSHOT = ManifestSchema(
    "snapshot", 2,
    pa.schema([
        pa.field("key", pa.string(), nullable=False),  # webdataset sample key
        pa.field("shard", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("person_type", pa.string()),
        pa.field("caption_groups", pa.list_(_CAPTION_GROUP)),
        pa.field("caption", pa.string()),
        pa.field("answers", pa.map_(pa.string(), pa.string())),
        pa.field("keypoints", pa.list_(pa.float32())),
        pa.field("person_box", _BOX),
        pa.field("face_box", _BOX),
        pa.field("quality", pa.float32()),
        pa.field("face_quality", pa.float32()),
        pa.field("source", pa.string()),
        pa.field("licence", pa.string()),
        pa.field("attribution", pa.string()),
        pa.field("parsing_source", pa.string()),  # source / segformer / fallback (v2; null in v1 snapshots)
    ]),
    "One row per published sample of a CosmicMan-HQ version.",
    older=(1,),
)

SCHEMAS = {s.name: s for s in (RAW_RECORDS, FILTERED_POOL, ANNOTATIONS, SNAPSHOT)}


def write_manifest(table: pa.Table, url: str | os.PathLike, schema: ManifestSchema) -> UPath:
    """Validate ``table`` against ``schema`` and write it atomically to ``url``."""
    expected = schema.with_metadata()
    if not table.schema.equals(expected, check_metadata=False):
        try:
            table = table.select(expected.names).cast(expected)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise ManifestError(f"{url}: table does not match schema {schema.name} v{schema.version}: {exc}") from None
    table = table.replace_schema_metadata(expected.metadata)
    target = UPath(str(url))
    if target.protocol in ("", "file", "local"):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp.path)
        with open(tmp.path, "rb+") as fh:
            os.fsync(fh.fileno())
        kill_point("manifest.written")
        os.replace(tmp.path, target.path)
        kill_point("manifest.replaced")
    else:
        with target.open("wb") as fh:
            pq.write_table(table, fh)
    return target


def read_manifest(url: str | os.PathLike, schema: ManifestSchema) -> pa.Table:
    target = UPath(str(url))
    try:
        with target.open("rb") as fh:
            table = pq.read_table(fh)
    except FileNotFoundError:
        raise ManifestError(f"{url}: manifest not found (has its stage run?)") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{url}: not a readable Parquet manifest: {exc}") from None
    meta = table.schema.metadata or {}
    name = meta.get(META_NAME, b"").decode()
    version = meta.get(META_VERSION, b"").decode()
    if name != schema.name:
        raise ManifestError(f"{url}: expected a {schema.name} manifest, found {name or 'no schema name'}")
    if version in {str(v) for v in schema.older}:  # an older layout: only columns added since are missing
        for f in schema.schema:
            if f.name not in table.column_names:
                table = table.append_column(f, pa.nulls(len(table), f.type))
        return table.select(schema.schema.names)
    if version != str(schema.version):
        raise ManifestError(f"{url}: {schema.name} schema version {version or '?'} is not the supported version {schema.version}")
    return table


def to_json(value: Any) -> str:
    """Stable JSON for side-car and score columns (sorted keys, numpy-safe)."""
    return json.dumps(value, sort_keys=True, default=_json_default, separators=(",", ":"))


def _json_default(obj: Any):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
