"""Replacing a finished folder so that a crash leaves the old one or the new one, never half of each."""

from __future__ import annotations

import shutil
from pathlib import Path


def replace_dir(src: Path, dst: Path) -> Path:
    """Move the complete folder ``src`` to ``dst``, replacing what is there (the old one is moved aside first and
    removed only once the new one is in place); returns ``dst``."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        src.rename(dst)
        shutil.rmtree(old)
    else:
        src.rename(dst)
    return dst
