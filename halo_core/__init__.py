"""halo_core: the science and the trainer of the halo lens finder (no Dagster import here)."""

__version__ = "0.1.0"
