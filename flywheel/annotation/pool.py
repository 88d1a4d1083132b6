"""The annotation pool: kept images with a parsing map each, and what the annotator sees of them.

Parsing comes from the source when it shipped one, else from a local SegFormer checkpoint
when configured, else from the no-weights fallback (stored in the content store like any
map). The annotator's views are cached by record id, so a refresh computes only new images.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flywheel.annotation.crops import Views
from flywheel.annotation.iterations import Pool
from flywheel.annotation.parsing import SegformerParser, decode_parsing, geometric_parsing
from flywheel.backends import BackendUnavailable
from flywheel.filters.decode import decode_image
from flywheel.protocol import Protocol
from flywheel.store import ContentStore
from flywheel.synthetic.source import encode_parsing

log = logging.getLogger(__name__)


@dataclass
class PoolImage:
    record_id: str
    sha256: str
    parsing_sha256: str
    parsing_source: str  # source / segformer / fallback


def _views_cache(folder: Path) -> tuple[dict[str, int], Views | None]:
    path = folder / "views.npz"
    if not path.exists():
        return {}, None
    data = np.load(path, allow_pickle=False)
    return {r: i for i, r in enumerate(data["ids"].tolist())}, Views(data["crops"], data["stats"])


def _save_views(folder: Path, ids: list[str], views: Views) -> None:
    tmp = folder / "views.tmp.npz"
    np.savez(tmp, ids=np.array(ids), crops=views.crops, stats=views.stats)
    os.replace(tmp, folder / "views.npz")


def build_pool(kept: list[dict], raw_by_id: dict[str, dict], store: ContentStore, protocol: Protocol, folder: Path,
               crop_size: int = 48, segformer_dir: str | None = None, working_side: int = 384) -> tuple[Pool, list[PoolImage], list[str]]:
    """``kept``: filtered-pool rows with verdict keep; ``raw_by_id``: their raw records.
    Returns the pool, each image's parsing provenance, and notes (backends that are off)."""
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    segformer = None
    if segformer_dir:
        try:
            segformer = SegformerParser(segformer_dir)
        except BackendUnavailable as exc:
            notes.append(f"segformer parsing is off: {exc}; the fallback parses images without a source map")
    cached_index, cached = _views_cache(folder)
    ids, images, truth = [], [], {}
    fresh_pairs, fresh_ids = [], []
    for row in kept:
        rid = row["record_id"]
        raw = raw_by_id[rid]
        sidecar = json.loads(raw["sidecar_json"]) if raw.get("sidecar_json") else {}
        # ground truth where it is known: the synthetic source's renderer attributes, or a folder of
        # renders whose metadata side-car carries them (the second, exact yardstick; labels come from people)
        metadata = sidecar.get("metadata") if isinstance(sidecar.get("metadata"), dict) else {}
        attributes = sidecar.get("attributes", metadata.get("attributes"))
        if isinstance(attributes, dict):
            truth[rid] = attributes
        parsing_key, source = raw.get("sidecar_parsing_sha256"), "source"
        need_views = rid not in cached_index
        image = None
        if need_views or not parsing_key:
            decoded = decode_image(store.get(row["sha256"]), max_side=working_side)
            image = decoded.image
        if not parsing_key:
            if segformer is not None:
                parsing, source = segformer.parse(image), "segformer"
            else:
                s = decoded.scale
                box = [v * s for v in row["person_box"]] if row.get("person_box") else None
                face = [v * s for v in row["face_box"]] if row.get("face_box") else None
                parsing, source = geometric_parsing(image, box, face), "fallback"
            parsing_key = store.put(encode_parsing(parsing))
        if need_views:
            parsing = decode_parsing(store.get(parsing_key))
            if parsing.shape != image.shape[:2]:
                parsing = cv2.resize(parsing, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
            fresh_pairs.append((image, parsing))
            fresh_ids.append(rid)
        ids.append(rid)
        images.append(PoolImage(rid, row["sha256"], parsing_key, source))
    fresh = Views.of(fresh_pairs, protocol, crop_size)
    fresh_index = {r: i for i, r in enumerate(fresh_ids)}
    parts = []
    for rid in ids:
        parts.append(fresh[fresh_index[rid]:fresh_index[rid] + 1] if rid in fresh_index
                     else cached[cached_index[rid]:cached_index[rid] + 1])
    views = Views.concat(parts) if parts else Views.of([], protocol, crop_size)
    if fresh_ids:
        _save_views(folder, ids, views)
    log.info("annotation pool: %d images (%d new views)", len(ids), len(fresh_ids))
    return Pool(ids, views, truth), images, notes
