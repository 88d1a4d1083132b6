"""Reading a CosmicMan-HQ version: what training and evaluation call.

``open_snapshot(folder)`` reads a snapshot folder (from ``dvc get``, ``dvc import`` or the
registry's working copy); ``fetch_snapshot(registry, version, cache)`` gets a version by its
tag into a local cache first (once per version). The returned :class:`Snapshot` knows its
version, tag and DVC data hash, which every MLflow run that reads it records.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from flywheel.snapshot.registry import get_version
from flywheel.snapshot.writer import SPLITS, read_split


class SnapshotNotFound(FileNotFoundError):
    pass


@dataclass
class Sample:
    key: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    parsing: np.ndarray  # (H, W) uint8 class ids
    meta: dict  # the manifest row (answers, caption groups, keypoints, boxes, ...)


@dataclass
class Snapshot:
    folder: Path
    version: int
    tag: str | None
    data_hash: str | None
    stats: dict
    registry: str | None = None  # the DVC data registry it was fetched from

    def rows(self, split: str = "train") -> list[dict]:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {SPLITS}")
        return read_split(self.folder, split)

    def samples(self, split: str = "train", limit: int | None = None) -> Iterator[Sample]:
        """Samples in manifest order, reading each shard once, front to back."""
        rows = self.rows(split)[:limit]
        by_shard: dict[str, list[dict]] = {}
        for r in rows:
            by_shard.setdefault(r["shard"], []).append(r)
        for shard, members in by_shard.items():
            wanted = {r["key"] for r in members}
            found: dict[str, dict[str, bytes]] = {}
            with tarfile.open(self.folder / shard) as tar:
                for m in tar:
                    key, _, ext = m.name.partition(".")
                    if key in wanted:
                        found.setdefault(key, {})[ext] = tar.extractfile(m).read()
            for r in members:
                parts = found.get(r["key"], {})
                image_bytes = next((parts[e] for e in ("jpg", "png", "webp") if e in parts), None)
                if image_bytes is None or "parsing.png" not in parts:
                    raise SnapshotNotFound(f"{self.folder / shard}: sample {r['key']} is missing its image or parsing map")
                yield Sample(r["key"], np.array(Image.open(io.BytesIO(image_bytes)).convert("RGB")),
                             np.array(Image.open(io.BytesIO(parts["parsing.png"]))), r)

    def fallback_parsing_share(self, split: str = "train") -> float | None:
        """Share of the split's parsing maps made by the geometry fallback (None: a v1 snapshot,
        which did not record where its maps came from)."""
        sources = [r.get("parsing_source") for r in self.rows(split)]
        if not sources or all(s is None for s in sources):
            return None
        return sum(s == "fallback" for s in sources) / len(sources)

    def tracking_tags(self) -> dict[str, str]:
        return {"snapshot.version": str(self.version), "snapshot.tag": self.tag or "untagged",
                "snapshot.data_hash": self.data_hash or "unknown", "snapshot.folder": str(self.folder)}


def open_snapshot(folder: str | Path, tag: str | None = None) -> Snapshot:
    folder = Path(folder)
    stats_path = folder / "stats.json"
    if not stats_path.exists():
        raise SnapshotNotFound(f"{folder}: not a snapshot folder (no stats.json)")
    stats = json.loads(stats_path.read_text())
    origin_path = Path(f"{folder}.version.yaml")  # written by get_version
    origin = yaml.safe_load(origin_path.read_text()) if origin_path.exists() else {}
    return Snapshot(folder, int(stats["version"]), tag or origin.get("tag") or stats.get("provenance", {}).get("tag"),
                    origin.get("data_hash"), stats)


def fetch_snapshot(registry_url: str, version: int, cache: Path, dvc: str = "dvc", dataset: str = "cosmicman-hq") -> Snapshot:
    """The version's folder in ``cache`` (fetched with ``dvc get`` the first time)."""
    tag = f"{dataset}-v{version}"
    out = Path(cache) / tag
    if not (out / "stats.json").exists():
        tmp = Path(cache) / f".{tag}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        Path(f"{tmp}.version.yaml").unlink(missing_ok=True)
        get_version(registry_url, tag, tmp, dvc, dataset)
        shutil.rmtree(out, ignore_errors=True)
        Path(f"{tmp}.version.yaml").replace(f"{out}.version.yaml")
        tmp.rename(out)
    snapshot = open_snapshot(out, tag)
    snapshot.registry = str(registry_url)
    return snapshot
