"""Partitions: one dynamic partition per source per refresh ("<source>--<UTC time>")."""

from datetime import datetime, timezone

import dagster as dg

source_batches = dg.DynamicPartitionsDefinition(name="source_batches")
SEP = "--"


def batch_key(source: str, when: datetime | None = None) -> str:
    when = when or datetime.now(timezone.utc)
    return f"{source}{SEP}{when.strftime('%Y%m%dT%H%M%SZ')}"


def parse_batch_key(key: str) -> tuple[str, str]:
    """(source name, batch name) of a partition key."""
    source, sep, stamp = key.rpartition(SEP)
    if not sep or not source:
        raise ValueError(f"partition key {key!r} is not '<source>{SEP}<batch>'")
    return source, stamp

annotation_iterations = dg.DynamicPartitionsDefinition(name="annotation_iterations")


def iteration_key(k: int) -> str:
    return f"iter-{k:04d}"


def parse_iteration_key(key: str) -> int:
    if not key.startswith("iter-") or not key[5:].isdigit():
        raise ValueError(f"partition key {key!r} is not 'iter-<number>'")
    return int(key[5:])
