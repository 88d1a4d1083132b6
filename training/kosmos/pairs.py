"""``kosmos_pairs``: the entity crops KOSMOS-G's instruction tuning reads, cut from a snapshot version.

For every sample and every garment group of its caption (a part with parsing classes that is not
the whole body, the face or the hair: the top, the shoes, a bag, ...), the garment is cut out by its parsing classes: the
bounding box of its pixels, everything else in the box painted grey, so the crop shows the
garment and nothing of the person or the scene. Each row also names a held-out *reference*: the
same garment (every answer of its part equal: type, colour, pattern, ...) worn by a different
sample, so an evaluation of "a person wearing <this garment>" can compare against a garment the
generator never saw and cannot pass by copying pixels. A garment no other sample wears has no
reference (null).

Parquet schema (one row per sample x garment, :data:`SCHEMA`):

- ``key``: the snapshot sample key; ``split``: train / test; ``part``: the protocol part;
- ``entity_text``: the garment's caption group text; ``caption``: the sample's whole caption;
- ``caption_groups_json``: the sample's groups (``part``, ``text``, ``class_ids``) as JSON;
- ``signature_json``: the part's answers (category -> answer) that define "the same garment";
- ``crop_png``: the garment crop (PNG, RGB, grey outside the garment); ``crop_box``: [x0, y0, x1, y1]
  in the sample image; ``garment_pixels``: the garment's pixel count;
- ``reference_key``, ``reference_crop_png``: the other sample wearing the same garment, or null.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.protocol import Protocol

GREY = 127
SCHEMA = pa.schema([
    ("key", pa.string()), ("split", pa.string()), ("part", pa.string()), ("entity_text", pa.string()),
    ("caption", pa.string()), ("caption_groups_json", pa.string()), ("signature_json", pa.string()),
    ("crop_png", pa.binary()), ("crop_box", pa.list_(pa.int32())), ("garment_pixels", pa.int64()),
    ("reference_key", pa.string()), ("reference_crop_png", pa.binary()),
])


# parts with parsing classes that are the person, not what they wear
NOT_GARMENTS = ("face", "hair")


def garment_groups(protocol: Protocol, groups: list[dict], not_garments=NOT_GARMENTS) -> list[dict]:
    """The caption groups that are garments: a part with parsing classes, not the whole body, not ``not_garments``."""
    human = set(protocol.human_class_ids)
    return [g for g in groups if g.get("class_ids") and not set(g["class_ids"]) >= human and g["part"] not in not_garments]


def garment_crop(image: np.ndarray, parsing: np.ndarray, class_ids, min_pixels: int) -> tuple[np.ndarray, list[int], int] | None:
    """The garment's box in ``image`` with every pixel outside its classes grey; None below ``min_pixels``."""
    mask = np.isin(parsing, list(class_ids))
    n = int(mask.sum())
    if n < min_pixels:
        return None
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    crop = np.where(mask[y0:y1, x0:x1, None], image[y0:y1, x0:x1], np.uint8(GREY)).astype(np.uint8)
    return crop, [x0, y0, x1, y1], n


def garment_signature(protocol: Protocol, part: str, answers: dict) -> dict[str, str]:
    """The answers of ``part``'s categories: two garments with equal signatures are the same garment."""
    return {c: answers[c] for c, cat in protocol.categories.items() if cat.part == part and answers.get(c) is not None}


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def unpng(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def build_pairs(samples: Iterable, protocol: Protocol, min_pixels: int = 24) -> list[dict]:
    """Rows of :data:`SCHEMA` for snapshot ``samples`` (``Sample`` objects: key, image, parsing, meta)."""
    rows: list[dict] = []
    for smp in samples:
        groups = smp.meta.get("caption_groups") or []
        answers = dict(smp.meta.get("answers") or {})  # a manifest's Arrow map reads as (key, value) pairs
        for g in garment_groups(protocol, groups):
            cut = garment_crop(smp.image, smp.parsing, g["class_ids"], min_pixels)
            if cut is None:
                continue
            crop, box, n = cut
            rows.append({"key": smp.key, "split": smp.meta.get("split", "train"), "part": g["part"],
                         "entity_text": g["text"], "caption": ", ".join(x["text"] for x in groups),
                         "caption_groups_json": json.dumps(groups), "crop_png": png(crop), "crop_box": box,
                         "garment_pixels": n,
                         "signature_json": json.dumps(garment_signature(protocol, g["part"], answers), sort_keys=True)})
    # the reference: the next sample (by key, cyclically) wearing the same garment, never the sample itself
    by_garment: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        by_garment.setdefault((r["part"], r["signature_json"]), []).append(i)
    for members in by_garment.values():  # one row per part and sample: every other member is another sample
        members.sort(key=lambda i: rows[i]["key"])
        for j, i in enumerate(members):
            ref = members[(j + 1) % len(members)] if len(members) > 1 else None
            rows[i]["reference_key"] = rows[ref]["key"] if ref is not None else None
            rows[i]["reference_crop_png"] = rows[ref]["crop_png"] if ref is not None else None
    return rows


def write_pairs(rows: list[dict], path: Path) -> Path:
    """Write ``rows`` as Parquet (atomically: a temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
    tmp.replace(path)
    return path


def read_pairs(path: Path) -> list[dict]:
    table = pq.read_table(path)
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a kosmos_pairs table (missing columns {missing})")
    return table.to_pylist()
