"""Dagster software-defined assets, grouped by domain; thin wrappers over flywheel.stages."""
