"""Dagster wiring of halo: assets, checks, jobs, schedules, sensors, resources (no maths here)."""
