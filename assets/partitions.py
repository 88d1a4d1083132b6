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
