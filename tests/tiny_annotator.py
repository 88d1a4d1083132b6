"""Annotator settings small enough for tests: the default ``learned`` backend with a few contrastive
steps of a narrow encoder (seconds on the 90-image pool)."""

TINY_PRETRAIN = {"steps": 20, "batch_size": 32, "width": 8}
