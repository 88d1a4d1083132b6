"""Dagster code location: definitions, resources, schedules, sensors."""
