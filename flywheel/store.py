"""Content-addressed object store: every image lives once, under its sha256.

Backed by fsspec through universal-pathlib, so the same code serves a local folder
(``/data/store`` or ``file://...``) and an S3 bucket (``s3://bucket/prefix``, with
endpoint and credentials from the usual AWS environment variables or ``storage_options``).
Writes are atomic on local disk (temporary name, then rename); on object stores a
PUT is atomic by itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from typing import Any

from upath import UPath

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContentStore:
    def __init__(self, url: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        self.url = str(url)
        self.root = UPath(self.url, **(storage_options or {}))
        self._local = self.root.protocol in ("", "file", "local")
        if self._local:
            self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ContentStore({self.url!r})"

    def path(self, key: str) -> UPath:
        if not _KEY_RE.match(key or ""):
            raise ValueError(f"not a sha256 content key: {key!r}")
        return self.root / "objects" / key[:2] / key[2:4] / key

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not already there) and return its key."""
        key = sha256_hex(data)
        target = self.path(key)
        if target.exists():
            return key
        if self._local:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{key}.{uuid.uuid4().hex}.tmp"
            with open(tmp.path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp.path, target.path)
        else:
            target.write_bytes(data)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{self.url}: no object {key}") from None

    def keys(self):
        """Every key in the store (walks the tree; for checks and tests, not hot paths)."""
        base = self.root / "objects"
        if not base.exists():
            return
        for p in base.rglob("*"):
            if _KEY_RE.match(p.name):
                yield p.name
