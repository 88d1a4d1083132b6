"""Writing a snapshot folder: webdataset tar shards and one Parquet manifest per split.

Layout (everything under one folder, which the DVC registry tracks as a whole)::

    train/000000.tar ...   test/000000.tar ...    webdataset shards
    manifests/train.parquet  manifests/test.parquet
    stats.json  card/README.md  card/*.png         statistics and the dataset card

A shard holds, per sample, ``<key>.<jpg|png>`` (the stored image bytes, untouched),
``<key>.parsing.png`` (the 18-class map) and ``<key>.json`` (annotations, boxes, keypoints).

Determinism and incremental uploads: the split comes from the image's content hash, so an
image never changes split; a sample already published keeps its shard, new samples fill
the last shard of their split and then new ones. Identical inputs (and the same previous
version) therefore give byte-identical tars and manifests, and a refresh that adds 1% of
images changes only the last shard and the new ones, which is all DVC uploads.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


from flywheel.manifests import SNAPSHOT, read_manifest, write_manifest

SPLITS = ("train", "test")
_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
# columns that come from the inputs (key, shard and split are assigned here)
INPUT_COLUMNS = [n for n in SNAPSHOT.schema.names if n not in ("key", "shard", "split")]


class SnapshotError(ValueError):
    """Inputs that cannot be published; the message names the sample and the problem."""


def split_of(sha256: str, test_fraction: float) -> str:
    """Stable by content: the first 8 hex digits of the image hash, as a fraction of 2^32."""
    return "test" if int(sha256[:8], 16) / 2**32 < test_fraction else "train"


def sample_key(record_id: str) -> str:
    # webdataset splits a member name at the first dot, so keys must have none
    return record_id.replace(".", "_")


@dataclass
class WrittenSnapshot:
    folder: Path
    counts: dict[str, int]  # samples per split
    shards: dict[str, list[str]]  # shard paths (relative) per split
    content_digest: str  # over manifests and shards: equal digests mean equal data


def _previous_assignment(previous: Path | None) -> dict[str, str]:
    """key -> shard of the version this one follows (empty for the first)."""
    out: dict[str, str] = {}
    if previous is None:
        return out
    for split in SPLITS:
        path = previous / "manifests" / f"{split}.parquet"
        if path.exists():
            t = read_manifest(path, SNAPSHOT).select(["key", "shard"]).to_pylist()
            out.update({r["key"]: r["shard"] for r in t})
    return out


def assign_shards(keys_by_split: Mapping[str, list[str]], previous: Mapping[str, str], shard_size: int) -> dict[str, str]:
    """Keep every previously published key in its shard; fill the last shard, then new ones."""
    out: dict[str, str] = {}
    for split, keys in keys_by_split.items():
        fill: dict[str, int] = defaultdict(int)
        fresh = []
        for k in keys:
            shard = previous.get(k)
            if shard and shard.startswith(f"{split}/"):
                out[k] = shard
                fill[shard] += 1
            else:
                fresh.append(k)
        n_shards = max((int(Path(s).stem) + 1 for s in fill), default=0)
        current = n_shards - 1 if n_shards else 0
        for k in sorted(fresh):
            name = f"{split}/{current:06d}.tar"
            while fill[name] >= shard_size:
                current += 1
                name = f"{split}/{current:06d}.tar"
            out[k] = name
            fill[name] += 1
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def _sample_json(row: Mapping) -> bytes:
    keep = ("key", "split", "sha256", "height", "width", "person_type", "caption", "caption_groups", "answers",
            "keypoints", "person_box", "face_box", "quality", "face_quality", "source", "licence", "attribution", "parsing_source")
    return json.dumps({k: row.get(k) for k in keep}, sort_keys=True, separators=(",", ":"), default=float).encode()


def write_snapshot(rows: Iterable[Mapping], fetch: Callable[[str], bytes], folder: Path, previous: Path | None = None,
                   shard_size: int = 2000, test_fraction: float = 0.05) -> WrittenSnapshot:
    """Write shards and manifests for ``rows`` into ``folder`` (which must be empty or absent).

    Each row carries :data:`INPUT_COLUMNS` plus ``record_id``, ``media_type`` and
    ``parsing_sha256``; ``fetch(sha256)`` returns stored bytes. ``previous`` is the folder
    of the version this one follows, for shard stability."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise SnapshotError(f"{folder}: snapshot folder is not empty")
    by_key: dict[str, dict] = {}
    for row in rows:
        for col in ("record_id", "sha256", "parsing_sha256", "media_type"):
            if not row.get(col):
                raise SnapshotError(f"sample {row.get('record_id', '?')}: missing {col}")
        if row["media_type"] not in _EXT:
            raise SnapshotError(f"sample {row['record_id']}: media type {row['media_type']!r} is not publishable "
                                f"(expected one of {sorted(_EXT)})")
        key = sample_key(row["record_id"])
        if key in by_key:
            raise SnapshotError(f"sample {row['record_id']}: appears twice")
        by_key[key] = {**{c: row.get(c) for c in INPUT_COLUMNS}, "key": key, "media_type": row["media_type"],
                       "parsing_sha256": row["parsing_sha256"], "split": split_of(row["sha256"], test_fraction)}
    keys_by_split = {s: sorted(k for k, r in by_key.items() if r["split"] == s) for s in SPLITS}
    shards = assign_shards(keys_by_split, _previous_assignment(previous), shard_size)
    members: dict[str, list[str]] = defaultdict(list)
    for key, shard in shards.items():
        by_key[key]["shard"] = shard
        members[shard].append(key)
    # the content digest covers every member as written and every manifest: tars are
    # deterministic in their members, so the large shards need not be read back
    digest = hashlib.sha256()
    for shard in sorted(members):
        path = folder / shard
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key in sorted(members[shard]):
                r = by_key[key]
                for name, data in ((f"{key}.{_EXT[r['media_type']]}", fetch(r["sha256"])),
                                   (f"{key}.parsing.png", fetch(r["parsing_sha256"])), (f"{key}.json", _sample_json(r))):
                    _add(tar, name, data)
                    digest.update(f"{shard}/{name}".encode())
                    digest.update(hashlib.sha256(data).digest())
    for split in SPLITS:
        table = SNAPSHOT.table([{c: by_key[k][c] for c in SNAPSHOT.schema.names} for k in keys_by_split[split]])
        path = write_manifest(table, folder / "manifests" / f"{split}.parquet", SNAPSHOT)
        digest.update(f"manifests/{split}".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return WrittenSnapshot(folder, {s: len(keys_by_split[s]) for s in SPLITS},
                           {s: sorted({shards[k] for k in keys_by_split[s]}) for s in SPLITS}, digest.hexdigest())


def read_split(folder: Path, split: str) -> list[dict]:
    return read_manifest(folder / "manifests" / f"{split}.parquet", SNAPSHOT).to_pylist()
