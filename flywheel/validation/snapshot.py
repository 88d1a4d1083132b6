"""The snapshot's suite, run on a written snapshot folder before it may be published:
every manifest row has its three shard members, every caption group points to a parsing
class present in that sample's map, and the test split's share is within tolerance."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from flywheel.snapshot.writer import SPLITS, read_split
from flywheel.validation.suites import ValidationSummary, run_suite


def _shard_contents(folder: Path, shard: str) -> dict[str, bytes | None]:
    """member name -> bytes for parsing maps (needed for the class check), None for the rest."""
    out: dict[str, bytes | None] = {}
    with tarfile.open(folder / shard) as tar:
        for m in tar.getmembers():
            out[m.name] = tar.extractfile(m).read() if m.name.endswith(".parsing.png") else None
    return out


def snapshot_frame(folder: Path) -> pd.DataFrame:
    rows = [r for s in SPLITS for r in read_split(folder, s)]
    shards: dict[str, dict[str, bytes | None]] = {}
    for r in rows:
        if r["shard"] not in shards:
            shards[r["shard"]] = _shard_contents(folder, r["shard"]) if (folder / r["shard"]).exists() else {}
    records = []
    for r in rows:
        names = shards[r["shard"]]
        key = r["key"]
        has_image = any(n in names for n in (f"{key}.jpg", f"{key}.png", f"{key}.webp"))
        parsing = names.get(f"{key}.parsing.png")
        present = set(np.unique(np.array(Image.open(io.BytesIO(parsing)))).tolist()) if parsing else set()
        groups = r["caption_groups"] or []
        orphan = sum(1 for g in groups if g["class_ids"] and not set(g["class_ids"]) & present)
        records.append({"key": key, "split": r["split"], "shard": r["shard"],
                        "missing_members": (not has_image) + (parsing is None) + (f"{key}.json" not in names),
                        "orphan_groups": orphan, "is_test": float(r["split"] == "test"), "caption": r["caption"]})
    return pd.DataFrame.from_records(records, columns=["key", "split", "shard", "missing_members", "orphan_groups",
                                                      "is_test", "caption"])


def validate_snapshot(folder: Path, test_fraction: float, tolerance: float, docs_dir: Path | None = None) -> ValidationSummary:
    df = snapshot_frame(folder)

    def build(E):
        return [E.ExpectTableRowCountToBeBetween(min_value=1),
                E.ExpectColumnValuesToBeUnique(column="key"),
                E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
                E.ExpectColumnValuesToBeBetween(column="missing_members", max_value=0),
                E.ExpectColumnValuesToBeBetween(column="orphan_groups", max_value=0),
                E.ExpectColumnValuesToNotBeNull(column="caption"),
                E.ExpectColumnMeanToBeBetween(column="is_test", min_value=max(0.0, test_fraction - tolerance),
                                              max_value=min(1.0, test_fraction + tolerance))]

    return run_suite("snapshot", df, build, docs_dir=docs_dir)
