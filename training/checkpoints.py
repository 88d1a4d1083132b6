"""accelerate checkpoints of a training folder: ``checkpoint-<step>``, at most N kept, resume from the latest."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from flywheel.faults import kill_point


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``folder``, oldest first."""
    return sorted((int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*") if (m := re.match(r"checkpoint-(\d+)$", p.name)))


def save_checkpoint(accelerator, folder: Path, step: int, total_limit: int) -> Path:
    """Save under a temporary name, rename into place, then drop the oldest so that ``total_limit`` remain.

    A kill at any moment leaves every complete checkpoint (and at most one ignored
    ``.partial`` folder, removed by the next save): resuming never meets a half-written state.
    """
    path = Path(folder) / f"checkpoint-{step}"
    partial = path.with_name(path.name + ".partial")
    for leftover in Path(folder).glob("checkpoint-*.partial"):
        shutil.rmtree(leftover)
    accelerator.save_state(str(partial))
    kill_point("training.checkpoint_written")
    if path.exists():  # the same step saved before a kill, then trained again
        shutil.rmtree(path)
    partial.rename(path)
    existing = checkpoints(folder)
    for _, old in existing[: max(0, len(existing) - total_limit)]:
        shutil.rmtree(old)
    kill_point("training.checkpoint_saved")
    return path
