"""CosmicMan-HQ snapshots: tar shards + Parquet manifests + statistics + dataset card,
published as immutable versions in a DVC data registry."""
