"""Helpers shared by every source for building raw-record rows."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone

from PIL import Image


def record_id(source: str, item: str) -> str:
    """Stable id of a candidate: the same source item keeps its id across refreshes."""
    return hashlib.sha256(f"{source}\n{item}".encode()).hexdigest()[:32]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def raw_row(source: str, source_type: str, batch: str, item: str, status: str = "ok", **fields) -> dict:
    row = {"record_id": record_id(source, item), "source": source, "source_type": source_type, "batch": batch,
           "item": item, "status": status, "fetched_at": utc_now()}
    row.update(fields)
    return row


def resize_to_max_side(data: bytes, max_side: int) -> tuple[bytes, tuple[int, int]] | None:
    """Re-encode an image whose longest side exceeds ``max_side`` (JPEG, quality 95).
    Returns (bytes, original size) or None when no resize is needed or it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            if max(size) <= max_side:
                return None
            img.draft("RGB", (max_side, max_side))
            img = img.convert("RGB")
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=95)
            return out.getvalue(), size
    except Exception:  # undecodable here: keep the original bytes, the filter records why
        return None
