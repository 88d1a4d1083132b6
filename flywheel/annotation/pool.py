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

from flywheel.annotation.crops import N_PART_FEATURES, Views
from flywheel.annotation.iterations import Pool
from flywheel.annotation.parsing import SegformerParser, decode_parsing, geometric_parsing
from flywheel.backends import BackendUnavailable
from flywheel.filters.decode import decode_image
from flywheel.protocol import Protocol
from flywheel.ray_data import EngineSettings
from flywheel.store import ContentStore
from flywheel.synthetic.source import encode_parsing

log = logging.getLogger(__name__)


@dataclass
class PoolImage:
    record_id: str
    sha256: str
    parsing_sha256: str
    parsing_source: str  # source / segformer / fallback


def _views_cache(folder: Path) -> tuple[dict[str, int], Views | None, dict[str, tuple[str, str]]]:
    """The views computed before, by record id, and each image's parsing map (key, source)."""
    path = folder / "views.npz"
    if not path.exists():
        return {}, None, {}
    data = np.load(path, allow_pickle=False)
    if data["stats"].shape[-1] != N_PART_FEATURES:  # written by a version with other part features: built again
        return {}, None, {}
    ids = data["ids"].tolist()
    parsing = dict(zip(ids, zip(data["parsing_keys"].tolist(), data["parsing_sources"].tolist()))) \
        if "parsing_keys" in data else {}  # caches written before parsing was cached: parsed again
    return {r: i for i, r in enumerate(ids)}, Views(data["crops"], data["stats"]), parsing


def _save_views(folder: Path, images: list[PoolImage], views: Views) -> None:
    tmp = folder / "views.tmp.npz"
    np.savez(tmp, ids=np.array([i.record_id for i in images]), crops=views.crops, stats=views.stats,
             parsing_keys=np.array([i.parsing_sha256 for i in images]),
             parsing_sources=np.array([i.parsing_source for i in images]))
    os.replace(tmp, folder / "views.npz")


class PoolViewBuilder:
    """One pool image's parsing map (the source's, else SegFormer's, else the no-weights fallback,
    stored in the content store) and the annotator's views of it, with the parser loaded once per
    process or Ray actor. A Ray Data callable class: ``__call__`` maps a batch of items."""

    def __init__(self, store: ContentStore, protocol: Protocol, crop_size: int = 48, segformer_dir: str | None = None,
                 working_side: int = 384):
        self.store, self.protocol, self.crop_size, self.working_side = store, protocol, crop_size, working_side
        self.segformer, self.notes = None, []
        if segformer_dir:
            try:
                self.segformer = SegformerParser(segformer_dir)
            except BackendUnavailable as exc:
                self.notes.append(f"segformer parsing is off: {exc}; the fallback parses images without a source map")

    def build(self, item: dict) -> tuple[str, str, np.ndarray, np.ndarray]:
        """``item``: a kept row's ``sha256``, ``person_box``, ``face_box`` and the source's ``parsing_key`` (or None).
        Returns the parsing map's key and source, and the working copy with its map at that size."""
        decoded = decode_image(self.store.get(item["sha256"]), max_side=self.working_side)
        image, parsing_key, source = decoded.image, item["parsing_key"], "source"
        if not parsing_key:
            if self.segformer is not None:
                parsing, source = self.segformer.parse(image), "segformer"
            else:
                s = decoded.scale
                box = [v * s for v in item["person_box"]] if item.get("person_box") else None
                face = [v * s for v in item["face_box"]] if item.get("face_box") else None
                parsing, source = geometric_parsing(image, box, face), "fallback"
            parsing_key = self.store.put(encode_parsing(parsing))
        parsing = decode_parsing(self.store.get(parsing_key))
        if parsing.shape != image.shape[:2]:
            parsing = cv2.resize(parsing, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        return parsing_key, source, image, parsing

    def views(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Views:
        return Views.of(pairs, self.protocol, self.crop_size)

    def __call__(self, batch: dict) -> dict:
        items = [json.loads(str(x)) for x in batch["item"]]
        built = [self.build(item) for item in items]
        views = self.views([(image, parsing) for _, _, image, parsing in built])
        return {"key": np.asarray([item["record_id"] for item in items], dtype=object),
                "result": np.asarray([json.dumps({"parsing_key": k, "source": src}) for k, src, _, _ in built], dtype=object),
                "crops": views.crops, "stats": views.stats}


def build_pool(kept: list[dict], raw_by_id: dict[str, dict], store: ContentStore, protocol: Protocol, folder: Path,
               crop_size: int = 48, segformer_dir: str | None = None, working_side: int = 384,
               engine: EngineSettings | None = None, workers: int = 2) -> tuple[Pool, list[PoolImage], list[str]]:
    """``kept``: filtered-pool rows with verdict keep; ``raw_by_id``: their raw records.
    New images are parsed and viewed in this process, or on Ray actors (engine ``ray``).
    Returns the pool, each image's parsing provenance, and notes (backends that are off)."""
    folder.mkdir(parents=True, exist_ok=True)
    cached_index, cached, cached_parsing = _views_cache(folder)
    args = (store, protocol, crop_size, segformer_dir, working_side)
    builder = PoolViewBuilder(*args)  # the notes, and the local engine's worker
    parser = "segformer" if builder.segformer is not None else "fallback"
    ids, truth, items = [], {}, []
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
        ids.append(rid)
        parsing_key = raw.get("sidecar_parsing_sha256")
        need_views = rid not in cached_index
        if not parsing_key and not need_views:  # parsed here before: reuse that map while the same parser is set
            key, source = cached_parsing.get(rid, (None, None))
            parsing_key, need_views = (key, False) if source == parser else (None, True)
        items.append({"record_id": rid, "sha256": row["sha256"], "person_box": row.get("person_box"),
                      "face_box": row.get("face_box"), "parsing_key": parsing_key, "need_views": need_views,
                      "source": "source" if raw.get("sidecar_parsing_sha256") else parser})
    todo = [it for it in items if it["need_views"]]
    built: dict[str, tuple[str, str]] = {}
    fresh_ids: list[str] = []  # in the order of the fresh views
    if engine is not None and engine.kind == "ray" and todo:
        from flywheel.ray_data import map_items

        crops, stats = [], []
        for row in map_items([(it["record_id"], it) for it in todo], PoolViewBuilder, args, engine, workers):
            result = json.loads(row["result"])
            built[row["key"]] = (result["parsing_key"], result["source"])
            fresh_ids.append(row["key"])
            crops.append(row["crops"])
            stats.append(row["stats"])
        fresh = Views(np.stack(crops), np.stack(stats))
    else:
        pairs = []
        for it in todo:
            key, source, image, parsing = builder.build(it)
            built[it["record_id"]] = (key, source)
            fresh_ids.append(it["record_id"])
            pairs.append((image, parsing))
        fresh = builder.views(pairs)
    images = [PoolImage(it["record_id"], it["sha256"], *built.get(it["record_id"], (it["parsing_key"], it["source"])))
              for it in items]
    fresh_index = {r: i for i, r in enumerate(fresh_ids)}
    parts = []
    for rid in ids:
        parts.append(fresh[fresh_index[rid]:fresh_index[rid] + 1] if rid in fresh_index
                     else cached[cached_index[rid]:cached_index[rid] + 1])
    views = Views.concat(parts) if parts else builder.views([])
    if fresh_ids:
        _save_views(folder, images, views)
    log.info("annotation pool: %d images (%d new views)", len(ids), len(fresh_ids))
    return Pool(ids, views, truth), images, builder.notes
