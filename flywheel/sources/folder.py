"""A folder of images (local or S3), with optional side-car annotations.

Academic datasets ship annotations beside their images (SHHQ parsing PNGs in a parallel
folder, DeepFashion keypoints and captions...). Side-car paths are templates relative to
the source root, with ``{rel_stem}`` the image's path below the root without extension
and ``{stem}`` its file stem. Parsing maps go into the store; keypoints, captions and any
JSON side-car are carried into the raw record verbatim.

Every file the source sees gets a row: images are read (``ok``) or not (``error`` with the
reason); side-cars, files of other types and anything outside the root get ``skipped`` or
``refused`` rows that say why. A local source never reads outside its root: a symlink (to a
file or a folder) whose target resolves outside it, a ``..`` in a side-car template, or a
mount point inside the root (another filesystem, e.g. a bind mount of ``/etc``) is refused
with a reason instead of being followed.
"""

from __future__ import annotations

import json
import os
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
    allow_other_filesystems: bool = Field(False, description="read files on other filesystems mounted inside the root "
                                          "(off: a bind mount inside the root could expose any folder of the host)")


class SourceFile:
    """A file below the root and, when it must not be read, why."""

    def __init__(self, path: UPath, rel: str, refused: str | None = None):
        self.path, self.rel, self.refused = path, rel, refused

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.rel)[1]


def is_local(root: UPath) -> bool:
    return getattr(root, "protocol", "") in ("", "file", "local")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk_local(root: UPath, allow_other_filesystems: bool) -> list[SourceFile]:
    """Every entry below a local root, symlinks not followed: each is checked where it resolves."""
    real_root = os.path.realpath(str(root))
    root_dev = os.stat(real_root).st_dev
    out: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(real_root, followlinks=False):
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, real_root)
            if os.path.islink(full):
                target = os.path.realpath(full)
                why = (f"symlinked folder pointing outside the source root ({target})" if not _inside(target, real_root)
                       else "symlinked folder (its files are listed where they are)")
                out.append(SourceFile(root / rel, rel, why))
            elif not allow_other_filesystems and os.stat(full).st_dev != root_dev:
                out.append(SourceFile(root / rel, rel, "mount point of another filesystem inside the source root "
                                      "(set allow_other_filesystems to read it)"))
                dirnames.remove(name)
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, real_root)
            refused = None
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not _inside(target, real_root):
                    refused = f"symlink pointing outside the source root ({target})"
                elif not os.path.exists(target):
                    refused = "broken symlink"
            elif not os.path.isfile(full):
                refused = "not a regular file (device, pipe or socket)"
            elif not allow_other_filesystems and os.stat(full).st_dev != root_dev:
                refused = "on another filesystem mounted inside the source root (set allow_other_filesystems to read it)"
            out.append(SourceFile(root / rel, rel, refused))
    return sorted(out, key=lambda f: f.rel)


def sidecar_rel(template: str | None, rel_stem: str, stem: str) -> str | None:
    """The side-car's path below the root, normalised (``a/../b`` -> ``b``); may start with ``..``."""
    return os.path.normpath(template.format(rel_stem=rel_stem, stem=stem)) if template else None


def list_files(cfg: FolderSourceSettings) -> tuple[UPath, list[SourceFile]]:
    """Every file below the root, sorted by relative path; local ones checked against escapes."""
    root = UPath(cfg.path, **cfg.storage_options)
    if not root.exists():
        raise FileNotFoundError(f"source {cfg.name!r}: folder {cfg.path} does not exist")
    if is_local(root):
        return root, _walk_local(root, cfg.allow_other_filesystems)
    root_str = str(root).rstrip("/")
    files = [SourceFile(p, str(p)[len(root_str) + 1:]) for p in root.rglob("*") if p.is_file()]
    return root, sorted(files, key=lambda f: f.rel)


def _sidecar(root: UPath, files: dict[str, SourceFile], template: str | None, rel_stem: str, stem: str,
             problems: list[str]) -> UPath | None:
    rel = sidecar_rel(template, rel_stem, stem)
    if rel is None:
        return None
    if rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
        problems.append(f"side-car {template!r} resolves outside the source root ({rel}): not read")
        return None
    f = files.get(rel)
    if f is None:
        return None
    if f.refused:
        problems.append(f"side-car {rel}: {f.refused}: not read")
        return None
    return f.path


def ingest_folder(cfg: FolderSourceSettings, store: ContentStore, batch: str, previous: Iterable[dict] = (),
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Ingest images not ingested before (by path); side-car failures are recorded, not fatal.

    A file that was skipped or refused before, for the same reason, gets no new row."""
    previous = list(previous)
    done = {r["record_id"] for r in previous if r["status"] == "ok"}
    said = {(r["record_id"], r["status"], r.get("reason")) for r in previous if r["status"] in ("skipped", "refused")}
    root, files = list_files(cfg)
    by_rel = {f.rel: f for f in files}
    exts = {e.lower() for e in cfg.extensions}
    images = [f for f in files if f.suffix.lower() in exts and not f.refused]
    sidecars: dict[str, str] = {}
    for f in images:
        rel_stem = f.rel[: -len(f.suffix)] if f.suffix else f.rel
        stem = os.path.basename(rel_stem)
        for template in (cfg.parsing, cfg.keypoints, cfg.caption, cfg.metadata):
            rel = sidecar_rel(template, rel_stem, stem)
            if rel is not None and rel != f.rel:
                sidecars.setdefault(rel, f.rel)
    rows: list[dict] = []

    def note(f: SourceFile, status: str, reason: str) -> None:
        if (record_id(cfg.name, f.rel), status, reason) not in said:
            rows.append(raw_row(cfg.name, "folder", batch, f.rel, status, reason=reason))

    todo: list[SourceFile] = []
    for f in files:
        if f.refused:
            note(f, "refused", f.refused)
        elif f.rel in sidecars:
            note(f, "skipped", f"side-car of {sidecars[f.rel]}")
        elif f.suffix.lower() not in exts:
            note(f, "skipped", f"extension {f.suffix or '(none)'!r} is not in the source's extensions")
        elif record_id(cfg.name, f.rel) not in done:
            todo.append(f)
    if cfg.max_items:
        todo = todo[: cfg.max_items]
    for i, f in enumerate(todo):
        path, rel = f.path, f.rel
        rel_stem = rel[: -len(f.suffix)] if f.suffix else rel
        stem = os.path.basename(rel_stem)
        fields: dict[str, Any] = {"licence": cfg.licence, "attribution": cfg.attribution}
        sidecar: dict[str, Any] = {}
        problems: list[str] = []
        try:
            data = path.read_bytes()
        except OSError as exc:
            rows.append(raw_row(cfg.name, "folder", batch, rel, "error", reason=f"unreadable: {exc}", **fields))
            continue
        if (p := _sidecar(root, by_rel, cfg.parsing, rel_stem, stem, problems)) is not None:
            fields["sidecar_parsing_sha256"] = store.put(p.read_bytes())
        if (p := _sidecar(root, by_rel, cfg.keypoints, rel_stem, stem, problems)) is not None:
            try:
                kp = json.loads(p.read_text())
                flat = [float(v) for v in (kp.get("keypoints", kp) if isinstance(kp, dict) else kp)]
                if len(flat) != 51:
                    raise ValueError(f"expected 51 numbers (17 x [x, y, v]), got {len(flat)}")
                fields["sidecar_keypoints"] = flat
            except (ValueError, TypeError, AttributeError) as exc:
                problems.append(f"keypoints side-car {p.name}: {exc}")
        if (p := _sidecar(root, by_rel, cfg.caption, rel_stem, stem, problems)) is not None:
            fields["caption"] = p.read_text().strip()
        if (p := _sidecar(root, by_rel, cfg.metadata, rel_stem, stem, problems)) is not None:
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
