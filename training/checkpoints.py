"""accelerate checkpoints of a training folder: ``checkpoint-<step>``, at most N kept, resume from the latest."""

from __future__ import annotations

import re
import shutil
from pathlib import Path


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``folder``, oldest first."""
    return sorted((int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*") if (m := re.match(r"checkpoint-(\d+)$", p.name)))


def save_checkpoint(accelerator, folder: Path, step: int, total_limit: int) -> Path:
    """Drop the oldest checkpoints so that ``total_limit`` remain with the new one, then save it."""
    existing = checkpoints(folder)
    for _, old in existing[: max(0, len(existing) - total_limit + 1)]:
        shutil.rmtree(old)
    path = Path(folder) / f"checkpoint-{step}"
    accelerator.save_state(str(path))
    return path
