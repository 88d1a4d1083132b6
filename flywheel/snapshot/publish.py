"""Publishing one CosmicMan-HQ version: write, describe, validate, then hand to the registry.

The steps, each safe to repeat after a kill: write the snapshot into the registry's
staging folder (following the latest version's shard assignment); if its content equals
the latest version's, publish nothing; compute statistics and write the dataset card; run
the snapshot suite (a failure blocks publishing and leaves the staged folder for
inspection); then the registry swaps it in, pushes and tags (see :mod:`registry`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from flywheel.protocol import Protocol
from flywheel.snapshot.card import snapshot_stats, write_card
from flywheel.snapshot.registry import DataRegistry, Publication
from flywheel.snapshot.settings import SnapshotSettings  # noqa: F401 (re-exported)
from flywheel.snapshot.writer import write_snapshot
from flywheel.validation.snapshot import validate_snapshot
from flywheel.validation.suites import ValidationSummary


class PublishBlocked(RuntimeError):
    def __init__(self, summary: ValidationSummary, staged: Path):
        super().__init__(f"snapshot suite failed; nothing was published (staged data kept at {staged}):\n{summary.as_markdown()}")
        self.summary, self.staged = summary, staged


@dataclass
class PublishResult:
    publication: Publication
    stats: dict
    validation: ValidationSummary | None
    folder: Path  # the registry's working copy of the published version
    card: Path


def publish_snapshot(rows: Iterable[Mapping], fetch: Callable[[str], bytes], registry: DataRegistry, protocol: Protocol,
                     settings: SnapshotSettings, provenance: Mapping[str, str], docs_dir: Path | None = None) -> PublishResult:
    with registry.lock():
        registry.ensure()
        latest = registry.latest()
        version = (latest or 0) + 1
        previous = registry.current if registry.current.exists() else None
        staged = registry.new_staging(version)
        written = write_snapshot(rows, fetch, staged, previous, settings.shard_size, settings.test_fraction)
        if latest is not None and previous is not None:
            old = json.loads((previous / "stats.json").read_text())
            # compare with the latest *tagged* version only: a working copy left by a publication
            # killed before its tag must still be published
            if old.get("version") == latest and old.get("provenance", {}).get("content_digest") == written.content_digest:
                shutil.rmtree(staged)
                pub = Publication(latest, registry.tag(latest), registry.data_hash(registry.tag(latest)), 0, new=False)
                return PublishResult(pub, old, None, previous, previous / "card" / "README.md")
        stats = snapshot_stats(staged, protocol)
        card = write_card(staged, stats, settings.name, version,
                          {**provenance, "tag": registry.tag(version), "content_digest": written.content_digest})
        summary = validate_snapshot(staged, settings.test_fraction, settings.split_tolerance, docs_dir)
        if not summary.success:
            raise PublishBlocked(summary, staged)
        pub = registry.publish(version, staged, f"{settings.name} {version}: {stats['images']} images "
                                                f"({stats['split_counts']['train']} train / {stats['split_counts']['test']} test)")
        return PublishResult(pub, stats, summary, registry.current, registry.current / card.relative_to(staged))
