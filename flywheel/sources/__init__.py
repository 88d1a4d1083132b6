"""Sources offer candidate images; each ingest writes them into the store and returns raw records."""

from flywheel.sources.records import record_id

__all__ = ["record_id"]
