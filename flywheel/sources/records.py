"""Helpers shared by every source for building raw-record rows."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone


def record_id(source: str, item: str) -> str:
    """Stable id of a candidate: the same source item keeps its id across refreshes."""
    return hashlib.sha256(f"{source}\n{item}".encode()).hexdigest()[:32]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
