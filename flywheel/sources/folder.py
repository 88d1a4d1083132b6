"""A folder of images (local or S3), with optional side-car annotations.

Academic datasets ship annotations beside their images (SHHQ parsing PNGs in a parallel
folder, DeepFashion keypoints and captions...). Side-car paths are templates relative to
the source root, with ``{rel_stem}`` the image's path below the root without extension
and ``{stem}`` its file stem. Parsing maps go into the store; keypoints, captions and any
JSON side-car are carried into the raw record verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field
from upath import UPath

from flywheel.manifests import to_json
from flywheel.sources.records import raw_row, record_id
from flywheel.store import ContentStore

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class FolderSourceSettings(BaseModel):
    type: Literal["folder"] = "folder"
    name: str
    path: str = Field(description="local folder or s3://bucket/prefix")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    parsing: str | None = Field(None, description='e.g. "parsing/{rel_stem}.png"')
    keypoints: str | None = Field(None, description='e.g. "{rel_stem}.keypoints.json" (COCO-17 [x, y, v] * 17)')
    caption: str | None = Field(None, description='e.g. "{rel_stem}.txt"')
    metadata: str | None = Field(None, description='e.g. "{rel_stem}.json": any JSON, carried verbatim')
    licence: str | None = None
    attribution: str | None = None
    max_items: int | None = Field(None, ge=1)


def _sidecar(root: UPath, template: str | None, rel_stem: str, stem: str) -> UPath | None:
    if not template:
        return None
    p = root / template.format(rel_stem=rel_stem, stem=stem)
    return p if p.exists() else None


def list_images(cfg: FolderSourceSettings) -> tuple[UPath, list[UPath]]:
    root = UPath(cfg.path, **cfg.storage_options)
    if not root.exists():
        raise FileNotFoundError(f"source {cfg.name!r}: folder {cfg.path} does not exist")
    exts = {e.lower() for e in cfg.extensions}
    images = sorted((p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file()), key=lambda p: str(p))
    return root, images


def ingest_folder(cfg: FolderSourceSettings, store: ContentStore, batch: str, previous: Iterable[dict] = (),
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Ingest images not ingested before (by path); side-car failures are recorded, not fatal."""
    done = {r["record_id"] for r in previous if r["status"] == "ok"}
    root, images = list_images(cfg)
    rows: list[dict] = []
    root_str = str(root).rstrip("/")
    todo = [p for p in images if record_id(cfg.name, str(p)[len(root_str) + 1:]) not in done]
    if cfg.max_items:
        todo = todo[: cfg.max_items]
    for i, path in enumerate(todo):
        rel = str(path)[len(root_str) + 1:]
        rel_stem = rel[: -len(path.suffix)] if path.suffix else rel
        fields: dict[str, Any] = {"licence": cfg.licence, "attribution": cfg.attribution}
        sidecar: dict[str, Any] = {}
        problems: list[str] = []
        try:
            data = path.read_bytes()
        except OSError as exc:
            rows.append(raw_row(cfg.name, "folder", batch, rel, "error", reason=f"unreadable: {exc}", **fields))
            continue
        if (p := _sidecar(root, cfg.parsing, rel_stem, path.stem)) is not None:
            fields["sidecar_parsing_sha256"] = store.put(p.read_bytes())
        if (p := _sidecar(root, cfg.keypoints, rel_stem, path.stem)) is not None:
            try:
                kp = json.loads(p.read_text())
                flat = [float(v) for v in (kp.get("keypoints", kp) if isinstance(kp, dict) else kp)]
                if len(flat) != 51:
                    raise ValueError(f"expected 51 numbers (17 x [x, y, v]), got {len(flat)}")
                fields["sidecar_keypoints"] = flat
            except (ValueError, TypeError, AttributeError) as exc:
                problems.append(f"keypoints side-car {p.name}: {exc}")
        if (p := _sidecar(root, cfg.caption, rel_stem, path.stem)) is not None:
            fields["caption"] = p.read_text().strip()
        if (p := _sidecar(root, cfg.metadata, rel_stem, path.stem)) is not None:
            try:
                sidecar["metadata"] = json.loads(p.read_text())
            except ValueError as exc:
                problems.append(f"metadata side-car {p.name}: {exc}")
        if problems:
            sidecar["sidecar_problems"] = problems
        rows.append(raw_row(cfg.name, "folder", batch, rel, "ok", sha256=store.put(data), n_bytes=len(data),
                            sidecar_json=to_json(sidecar) if sidecar else None, **fields))
        if progress:
            progress(i + 1, len(todo))
    return rows
